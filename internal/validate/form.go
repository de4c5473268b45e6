package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// decodeForm reads the create members that go into a store.Form:
// preselectRecommended, onTimeout and questions. The plain members are in
// req already; form.Options too.
func decodeForm(fields map[string]json.RawMessage, req *CreateRequest, form *store.Form, lim Limits) *Error {
	if raw, ok := fields["preselectRecommended"]; ok && !isNull(raw) {
		b, verr := jsonBool(raw, "preselectRecommended")
		if verr != nil {
			return verr
		}
		if b && !slices.ContainsFunc(form.Options, func(o store.Option) bool { return o.Recommended }) {
			return invalid("preselectRecommended needs one of predefinedOptions marked recommended")
		}
		form.PreselectRecommended = b
	}
	if raw, ok := fields["questions"]; ok && !isNull(raw) {
		qs, verr := decodeQuestions(raw, lim)
		if verr != nil {
			return verr
		}
		if len(req.PredefinedOptions) > 0 || req.MultiSelect {
			return invalid("questions replace predefinedOptions and multiSelect: give options to each question instead")
		}
		form.Questions = qs
	}
	if raw, ok := fields["onTimeout"]; ok && !isNull(raw) {
		p, verr := decodeTimeoutPolicy(raw, req.PredefinedOptions, form.Questions != nil)
		if verr != nil {
			return verr
		}
		if p.Action != store.TimeoutExpire {
			form.OnTimeout = p
		}
	}
	return nil
}

func decodeTimeoutPolicy(raw json.RawMessage, options []string, isForm bool) (*store.TimeoutPolicy, *Error) {
	shape := `onTimeout must be {"action":"expire"}, {"action":"choose","option":"<one of predefinedOptions>"} or {"action":"keep"}`
	if raw[0] != '{' {
		return nil, invalid("%s", shape)
	}
	fields, verr := decodeObject(raw, []string{"action", "option"})
	if verr != nil {
		return nil, &Error{Code: verr.Code, Message: "onTimeout: " + verr.Message}
	}
	araw, ok := fields["action"]
	if !ok {
		return nil, invalid("onTimeout.action is required: expire, choose or keep")
	}
	action, verr := jsonString(araw, "onTimeout.action")
	if verr != nil {
		return nil, verr
	}
	p := &store.TimeoutPolicy{Action: action}
	oraw, hasOption := fields["option"]
	hasOption = hasOption && !isNull(oraw)
	switch action {
	case store.TimeoutExpire, store.TimeoutKeep:
		if hasOption {
			return nil, invalid("onTimeout.option belongs only to the action choose")
		}
	case store.TimeoutChoose:
		if isForm {
			return nil, invalid("onTimeout choose picks one of predefinedOptions, so it cannot be used with questions")
		}
		if !hasOption {
			return nil, invalid("onTimeout choose needs option: the label of one of predefinedOptions")
		}
		o, verr := jsonString(oraw, "onTimeout.option")
		if verr != nil {
			return nil, verr
		}
		if !slices.Contains(options, o) {
			return nil, invalid("onTimeout.option %q is not one of predefinedOptions", truncate(o, 60))
		}
		p.Option = o
	default:
		return nil, invalid("onTimeout.action %q is not expire, choose or keep", truncate(action, 40))
	}
	return p, nil
}

var questionFields = []string{"id", "message", "kind", "options", "required", "default", "min", "max"}

func decodeQuestions(raw json.RawMessage, lim Limits) ([]store.Question, *Error) {
	shape := `questions must be an array of {"id","message","kind",…} objects`
	if raw[0] != '[' {
		return nil, invalid("%s", shape)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return nil, invalid("%s", shape)
	}
	if len(arr) == 0 {
		return nil, invalid("questions is empty; leave it out for a single question")
	}
	if len(arr) > lim.MaxQuestions {
		return nil, invalid("questions has %d entries; the limit is %d", len(arr), lim.MaxQuestions)
	}
	out := make([]store.Question, 0, len(arr))
	for i, el := range arr {
		q, verr := decodeQuestion(el, i, lim)
		if verr != nil {
			return nil, verr
		}
		if slices.ContainsFunc(out, func(p store.Question) bool { return p.ID == q.ID }) {
			return nil, invalid("questions[%d]: the id %q is used twice", i, q.ID)
		}
		out = append(out, q)
	}
	return out, nil
}

// validQuestionID: ids are keys of the answer and parts of element ids on
// the page, so they are plain: letters, digits, '_' and '-'.
func validQuestionID(id string) bool {
	if id == "" || len(id) > MaxQuestionIDLength {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) < 0
}

func decodeQuestion(raw json.RawMessage, i int, lim Limits) (store.Question, *Error) {
	var q store.Question
	at := fmt.Sprintf("questions[%d]", i)
	if raw[0] != '{' {
		return q, invalid(`%s must be an object {"id","message","kind",…}`, at)
	}
	fields, verr := decodeObject(raw, questionFields)
	if verr != nil {
		return q, &Error{Code: verr.Code, Message: at + ": " + verr.Message}
	}
	idRaw, ok := fields["id"]
	if !ok || isNull(idRaw) {
		return q, invalid("%s.id is required", at)
	}
	if q.ID, verr = jsonString(idRaw, at+".id"); verr != nil {
		return q, verr
	}
	if !validQuestionID(q.ID) {
		return q, invalid("%s.id %q must be 1 to %d letters, digits, '_' or '-'", at, truncate(q.ID, 40), MaxQuestionIDLength)
	}
	// From here on, messages name the question by its id.
	at = fmt.Sprintf("question %q", q.ID)
	mraw, ok := fields["message"]
	if !ok || isNull(mraw) {
		return q, invalid("%s: message is required", at)
	}
	if q.Message, verr = jsonString(mraw, at+": message"); verr != nil {
		return q, verr
	}
	if strings.TrimSpace(q.Message) == "" {
		return q, invalid("%s: message must not be empty", at)
	}
	if n := utf8.RuneCountInString(q.Message); n > lim.MaxMessageLength {
		return q, invalid("%s: message is %d characters long; the limit is %d", at, n, lim.MaxMessageLength)
	}
	if verr := checkText(q.Message, at+": message", true); verr != nil {
		return q, verr
	}
	kraw, ok := fields["kind"]
	if !ok || isNull(kraw) {
		return q, invalid("%s: kind is required: single, multi, text, boolean or number", at)
	}
	if q.Kind, verr = jsonString(kraw, at+": kind"); verr != nil {
		return q, verr
	}
	switch q.Kind {
	case store.KindSingle, store.KindMulti, store.KindText, store.KindBoolean, store.KindNumber:
	default:
		return q, invalid("%s: kind %q is not single, multi, text, boolean or number", at, truncate(q.Kind, 40))
	}
	choice := q.Kind == store.KindSingle || q.Kind == store.KindMulti
	if oraw, ok := fields["options"]; ok && !isNull(oraw) {
		if !choice {
			return q, invalid("%s: options belong only to the kinds single and multi", at)
		}
		if q.Options, verr = decodeOptions(oraw, at+": options", lim); verr != nil {
			return q, verr
		}
	}
	if choice && len(q.Options) == 0 {
		return q, invalid("%s: a %s question needs options", at, q.Kind)
	}
	if rraw, ok := fields["required"]; ok && !isNull(rraw) {
		if q.Required, verr = jsonBool(rraw, at+": required"); verr != nil {
			return q, verr
		}
	}
	for name, dst := range map[string]**float64{"min": &q.Min, "max": &q.Max} {
		raw, ok := fields[name]
		if !ok || isNull(raw) {
			continue
		}
		if q.Kind == store.KindSingle || q.Kind == store.KindBoolean {
			return q, invalid("%s: %s applies only to number (its value), text (its length) and multi (how many are picked)", at, name)
		}
		v, verr := jsonNumber(raw, at+": "+name)
		if verr != nil {
			return q, verr
		}
		if q.Kind != store.KindNumber && (v < 0 || v != math.Trunc(v) || v > 1e6) {
			return q, invalid("%s: %s must be a whole number from 0 for a %s question", at, name, q.Kind)
		}
		*dst = &v
	}
	if q.Min != nil && q.Max != nil && *q.Min > *q.Max {
		return q, invalid("%s: min (%s) is greater than max (%s)", at, formatNumber(*q.Min), formatNumber(*q.Max))
	}
	if draw, ok := fields["default"]; ok && !isNull(draw) {
		v, verr := checkValue(&q, draw, "default")
		if verr != nil {
			return q, verr
		}
		q.Default = v
	}
	return q, nil
}

// jsonNumber reads a finite JSON number.
func jsonNumber(raw json.RawMessage, name string) (float64, *Error) {
	s := string(raw)
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, invalid("%s must be a number", name)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, invalid("%s must be a number within the range of a double", name)
	}
	return v, nil
}

func formatNumber(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// checkValue checks one answer (or a default) against its question and
// returns it as compact JSON of the question's type. what is "answer" or
// "default", for messages.
func checkValue(q *store.Question, raw json.RawMessage, what string) (json.RawMessage, *Error) {
	at := fmt.Sprintf("question %q", q.ID)
	switch q.Kind {
	case store.KindSingle:
		s, verr := jsonString(raw, at+": the "+what)
		if verr != nil {
			return nil, invalid("%s: the %s must be one option's label (a string)", at, what)
		}
		if !slices.ContainsFunc(q.Options, func(o store.Option) bool { return o.Label == s }) {
			return nil, invalid("%s: %q is not one of its options", at, truncate(s, 60))
		}
		return marshal(s)
	case store.KindMulti:
		if raw[0] != '[' {
			return nil, invalid("%s: the %s must be an array of option labels", at, what)
		}
		var arr []json.RawMessage
		if err := json.Unmarshal(raw, &arr); err != nil {
			return nil, invalid("%s: the %s must be an array of option labels", at, what)
		}
		picked := make([]string, 0, len(arr))
		for _, el := range arr {
			s, verr := jsonString(el, at)
			if verr != nil {
				return nil, invalid("%s: the %s must be an array of option labels (strings)", at, what)
			}
			if !slices.ContainsFunc(q.Options, func(o store.Option) bool { return o.Label == s }) {
				return nil, invalid("%s: %q is not one of its options", at, truncate(s, 60))
			}
			if slices.Contains(picked, s) {
				return nil, invalid("%s: option %q is picked twice", at, truncate(s, 60))
			}
			picked = append(picked, s)
		}
		if verr := inRange(q, float64(len(picked)), what, "picks %s options; pick at least %s", "picks %s options; pick at most %s"); verr != nil {
			return nil, verr
		}
		return marshal(picked)
	case store.KindText:
		s, verr := jsonString(raw, at)
		if verr != nil {
			return nil, invalid("%s: the %s must be a string", at, what)
		}
		n := utf8.RuneCountInString(s)
		if n > MaxFreeTextChars {
			return nil, invalid("%s: the %s is %d characters long; the limit is %d", at, what, n, MaxFreeTextChars)
		}
		if verr := checkText(s, at+": the "+what, true); verr != nil {
			return nil, verr
		}
		if verr := inRange(q, float64(n), what, "is %s characters long; write at least %s", "is %s characters long; the limit is %s"); verr != nil {
			return nil, verr
		}
		return marshal(s)
	case store.KindBoolean:
		b, verr := jsonBool(raw, at)
		if verr != nil {
			return nil, invalid("%s: the %s must be true or false", at, what)
		}
		return marshal(b)
	case store.KindNumber:
		v, verr := jsonNumber(raw, at)
		if verr != nil {
			return nil, invalid("%s: the %s must be a number", at, what)
		}
		if verr := inRange(q, v, what, "is %s; the minimum is %s", "is %s; the maximum is %s"); verr != nil {
			return nil, verr
		}
		return marshal(v)
	}
	return nil, invalid("%s: unknown kind %q", at, q.Kind)
}

// inRange checks v against q's min and max; below and above are the
// messages, with the value and the bound.
func inRange(q *store.Question, v float64, what, below, above string) *Error {
	at := fmt.Sprintf("question %q: the %s ", q.ID, what)
	if q.Min != nil && v < *q.Min {
		return invalid(at+below, formatNumber(v), formatNumber(*q.Min))
	}
	if q.Max != nil && v > *q.Max {
		return invalid(at+above, formatNumber(v), formatNumber(*q.Max))
	}
	return nil
}

// CheckForm checks a submit to a form of questions and returns the
// answers as one compact JSON object, in the questions' order, each value
// of its question's type. Unanswered optional questions are left out; an
// empty text or an empty multi counts as unanswered.
func CheckForm(req *SubmitRequest, questions []store.Question, allowFreeText bool) (json.RawMessage, *Error) {
	if len(req.SelectedOptions) > 0 {
		return nil, invalid(`this is a form of several questions: answer with "answers": {"<question id>": <answer>}, not selectedOptions`)
	}
	for id := range req.Answers {
		if !slices.ContainsFunc(questions, func(q store.Question) bool { return q.ID == id }) {
			return nil, invalid("answers: %q is not the id of a question in this form", truncate(id, 40))
		}
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	answered := 0
	for i := range questions {
		q := &questions[i]
		raw, ok := req.Answers[q.ID]
		if ok && (isNull(raw) || string(raw) == "[]" || (q.Kind == store.KindText && blank(raw))) {
			ok = false
		}
		if !ok {
			if q.Required {
				return nil, invalid("question %q is required and has no answer", q.ID)
			}
			continue
		}
		v, verr := checkValue(q, raw, "answer")
		if verr != nil {
			return nil, verr
		}
		if answered > 0 {
			buf.WriteByte(',')
		}
		answered++
		id, _ := json.Marshal(q.ID)
		buf.Write(id)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	if req.FreeText != "" {
		if !allowFreeText {
			return nil, invalid("this form does not take free text besides its answers")
		}
		if verr := checkFreeText(req.FreeText); verr != nil {
			return nil, verr
		}
	}
	if answered == 0 && strings.TrimSpace(req.FreeText) == "" {
		return nil, invalid("answer at least one question")
	}
	return buf.Bytes(), nil
}

// blank: a JSON string of only white space (an untouched text box).
func blank(raw json.RawMessage) bool {
	var s string
	return json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) == ""
}

// marshal encodes a checked value; the values here (strings, string
// slices, booleans, finite numbers) always encode.
func marshal(v any) (json.RawMessage, *Error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, invalid("the value cannot be encoded: %v", err)
	}
	return b, nil
}
