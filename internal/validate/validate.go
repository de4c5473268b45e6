// Package validate decodes and checks what agents and people send: the body
// of a create (shared by the REST API and the MCP tool, so both give the same
// answer to the same input) and the body of a submit.
//
// Decoding is strict on purpose. encoding/json alone would replace invalid
// UTF-8 silently, match field names case-insensitively, let a duplicate key
// win quietly and accept "300" for a number; each of those would let two
// readers of the same body disagree, so every one is an error here.
package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Fixed limits (the configurable ones are in Limits).
const (
	MaxBodyBytes     = 64 << 10
	MaxMetadataBytes = 2 << 10
	MaxFreeTextChars = 10000
	MaxNonceLength   = 128
	// MaxDescriptionChars caps an option's description, in characters.
	MaxDescriptionChars = 500
	// MaxQuestionIDLength caps a form question's id.
	MaxQuestionIDLength = 64
)

// What an out-of-range timeout gets (Limits.TimeoutOutOfRange).
const (
	TimeoutClamp  = "clamp"  // the nearest allowed value, with a warning
	TimeoutReject = "reject" // a 400 naming the range
)

// Limits are the operator-configurable bounds of a session.
type Limits struct {
	DefaultTimeout   time.Duration
	MinTimeout       time.Duration
	MaxTimeout       time.Duration
	MaxMessageLength int // in characters (Unicode code points)
	MaxOptions       int
	MaxOptionLength  int // in characters
	// MaxQuestions caps the questions of one form.
	MaxQuestions int
	// MaxImages caps the images of one question (at most MaxImages, the
	// fixed ceiling); 0 refuses images.
	MaxImages int
	// TimeoutOutOfRange is TimeoutClamp or TimeoutReject; "" is clamp.
	TimeoutOutOfRange string
	// AllowAddressing admits `to`: questions addressed to other people
	// (the allow_addressing option). Off, `to` is refused.
	AllowAddressing bool
}

// DefaultLimits are the seed's limits.
func DefaultLimits() Limits {
	return Limits{
		DefaultTimeout:   5 * time.Minute,
		MinTimeout:       30 * time.Second,
		MaxTimeout:       time.Hour,
		MaxMessageLength: 1000,
		MaxOptions:       10,
		MaxOptionLength:  100,
		MaxQuestions:     10,
		MaxImages:        MaxImages,
		// Clients send timeouts outside any range (Cursor sends 1): the
		// nearest allowed one serves them better than an error.
		TimeoutOutOfRange: TimeoutClamp,
	}
}

// Error is a rejected input: Code is a stable machine word, Message says
// what was wrong in words a person can act on.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func invalid(format string, args ...any) *Error {
	return &Error{Code: "invalid_request", Message: fmt.Sprintf(format, args...)}
}

// CreateRequest is a validated create.
type CreateRequest struct {
	Message           string
	PredefinedOptions []string // the labels
	Timeout           time.Duration
	Metadata          json.RawMessage // compact JSON object, or nil
	MultiSelect       bool
	AllowFreeText     bool
	// Form is nil for a plain question: no option details, no questions,
	// the default timeout policy.
	Form *store.Form
	// Warnings say what was changed rather than refused (a clamped
	// timeout); the asker gets them back.
	Warnings []string
	// Images are the attached images, checked; their refs are also in
	// Form.Images, in the same order.
	Images []Image
	// To are the other people the question is addressed to (person ids),
	// distinct; nil unless Limits.AllowAddressing.
	To []string
}

// CreateFields are the members a create body may have. Extra lists members
// the caller handles itself (the MCP tool's "wait"); they are returned raw.
var createFields = []string{"message", "predefinedOptions", "timeout", "metadata", "multiSelect", "allowFreeText",
	"preselectRecommended", "onTimeout", "questions", "images", "to"}

// DecodeCreate parses and validates a create body.
func DecodeCreate(body []byte, lim Limits, extra ...string) (*CreateRequest, map[string]json.RawMessage, *Error) {
	fields, verr := decodeObject(body, append(slices.Clone(createFields), extra...))
	if verr != nil {
		return nil, nil, verr
	}
	req := &CreateRequest{Timeout: lim.DefaultTimeout, AllowFreeText: true}

	raw, ok := fields["message"]
	if !ok {
		return nil, nil, invalid("message is required")
	}
	msg, verr := jsonString(raw, "message")
	if verr != nil {
		return nil, nil, verr
	}
	if strings.TrimSpace(msg) == "" {
		return nil, nil, invalid("message must not be empty")
	}
	if n := utf8.RuneCountInString(msg); n > lim.MaxMessageLength {
		return nil, nil, invalid("message is %d characters long; the limit is %d", n, lim.MaxMessageLength)
	}
	if verr := checkText(msg, "message", true); verr != nil {
		return nil, nil, verr
	}
	req.Message = msg

	form := &store.Form{}
	if raw, ok := fields["predefinedOptions"]; ok && !isNull(raw) {
		opts, verr := decodeOptions(raw, "predefinedOptions", lim)
		if verr != nil {
			return nil, nil, verr
		}
		req.PredefinedOptions = labels(opts)
		if detailed(opts) {
			form.Options = opts
		}
	}
	if raw, ok := fields["timeout"]; ok && !isNull(raw) {
		d, warn, verr := decodeTimeout(raw, lim)
		if verr != nil {
			return nil, nil, verr
		}
		req.Timeout = d
		if warn != "" {
			req.Warnings = append(req.Warnings, warn)
		}
	}
	if raw, ok := fields["metadata"]; ok && !isNull(raw) {
		md, verr := decodeMetadata(raw)
		if verr != nil {
			return nil, nil, verr
		}
		req.Metadata = md
	}
	for name, dst := range map[string]*bool{"multiSelect": &req.MultiSelect, "allowFreeText": &req.AllowFreeText} {
		if raw, ok := fields[name]; ok && !isNull(raw) {
			b, verr := jsonBool(raw, name)
			if verr != nil {
				return nil, nil, verr
			}
			*dst = b
		}
	}
	if verr := decodeForm(fields, req, form, lim); verr != nil {
		return nil, nil, verr
	}
	if raw, ok := fields["images"]; ok && !isNull(raw) {
		ims, verr := decodeImages(raw, lim.MaxImages)
		if verr != nil {
			return nil, nil, verr
		}
		req.Images = ims
		for _, im := range ims {
			form.Images = append(form.Images, im.Ref)
		}
	}
	if len(req.PredefinedOptions) == 0 && !req.AllowFreeText && form.Questions == nil {
		return nil, nil, invalid("with no predefinedOptions, allowFreeText must be true, or the person could not answer")
	}
	if req.MultiSelect && len(req.PredefinedOptions) == 0 {
		return nil, nil, invalid("multiSelect needs predefinedOptions")
	}
	if form.Options != nil || form.PreselectRecommended || form.Questions != nil || form.OnTimeout != nil || form.Images != nil {
		req.Form = form
	}
	if raw, ok := fields["to"]; ok && !isNull(raw) {
		if req.To, verr = decodeTo(raw, lim); verr != nil {
			return nil, nil, verr
		}
	}
	rest := map[string]json.RawMessage{}
	for _, name := range extra {
		if raw, ok := fields[name]; ok {
			rest[name] = raw
		}
	}
	return req, rest, nil
}

// SubmitRequest is a decoded submit body, not yet checked against its session.
type SubmitRequest struct {
	SelectedOptions []string
	FreeText        string
	Nonce           string
	// Answers is a form's {question id: value}, raw until CheckForm checks
	// it against the questions; nil when absent.
	Answers map[string]json.RawMessage
	// Attachments are the ids of the person's uploads the answer carries,
	// each at most once; the core checks they exist.
	Attachments []string
}

// DecodeSubmit parses a submit body.
func DecodeSubmit(body []byte) (*SubmitRequest, *Error) {
	fields, verr := decodeObject(body, []string{"selectedOptions", "freeText", "nonce", "answers", "attachments"})
	if verr != nil {
		return nil, verr
	}
	req := &SubmitRequest{}
	if raw, ok := fields["answers"]; ok && !isNull(raw) {
		if raw[0] != '{' {
			return nil, invalid(`answers must be an object {"<question id>": <answer>}`)
		}
		ans, verr := decodeObject(raw, nil)
		if verr != nil {
			return nil, &Error{Code: verr.Code, Message: "answers: " + verr.Message}
		}
		req.Answers = ans
	}
	if raw, ok := fields["attachments"]; ok && !isNull(raw) {
		ids, verr := decodeAttachmentIDs(raw)
		if verr != nil {
			return nil, verr
		}
		req.Attachments = ids
	}
	if raw, ok := fields["selectedOptions"]; ok && !isNull(raw) {
		arr, ok := splitArray(raw)
		if !ok {
			return nil, invalid("selectedOptions must be an array of strings")
		}
		for i, el := range arr {
			s, verr := jsonString(el, fmt.Sprintf("selectedOptions[%d]", i))
			if verr != nil {
				return nil, verr
			}
			req.SelectedOptions = append(req.SelectedOptions, s)
		}
	}
	if raw, ok := fields["freeText"]; ok && !isNull(raw) {
		s, verr := jsonString(raw, "freeText")
		if verr != nil {
			return nil, verr
		}
		req.FreeText = s
	}
	if raw, ok := fields["nonce"]; ok && !isNull(raw) {
		s, verr := jsonString(raw, "nonce")
		if verr != nil {
			return nil, verr
		}
		if len(s) > MaxNonceLength || strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return nil, invalid("nonce must be at most %d printable ASCII characters", MaxNonceLength)
		}
		req.Nonce = s
	}
	return req, nil
}

// CheckAnswer checks a submit against the session's question (a single
// question; a form is CheckForm's).
func CheckAnswer(req *SubmitRequest, options []string, multiSelect, allowFreeText bool) *Error {
	if req.Answers != nil {
		return invalid("answers belong to a form of several questions; this question takes selectedOptions and freeText")
	}
	seen := map[string]bool{}
	for _, o := range req.SelectedOptions {
		if !slices.Contains(options, o) {
			return invalid("%q is not one of the offered options", truncate(o, 60))
		}
		if seen[o] {
			return invalid("option %q is selected twice", truncate(o, 60))
		}
		seen[o] = true
	}
	if len(req.SelectedOptions) > 1 && !multiSelect {
		return invalid("only one option may be selected")
	}
	if req.FreeText != "" {
		if !allowFreeText {
			return invalid("this question does not take free text; pick one of the options")
		}
		if verr := checkFreeText(req.FreeText); verr != nil {
			return verr
		}
	}
	// Files alone answer a question that takes the person's own words.
	if len(req.SelectedOptions) == 0 && strings.TrimSpace(req.FreeText) == "" && (len(req.Attachments) == 0 || !allowFreeText) {
		if allowFreeText {
			return invalid("select an option or write an answer")
		}
		return invalid("select an option")
	}
	return nil
}

func checkFreeText(s string) *Error {
	if n := utf8.RuneCountInString(s); n > MaxFreeTextChars {
		return invalid("freeText is %d characters long; the limit is %d", n, MaxFreeTextChars)
	}
	return checkText(s, "freeText", true)
}

// decodeObject reads exactly one JSON object whose member names are all in
// allowed (case-sensitive, each at most once; nil allows any name) and
// returns the raw members.
func decodeObject(body []byte, allowed []string) (map[string]json.RawMessage, *Error) {
	if fields, ok := splitObject(body, allowed); ok {
		return fields, nil
	}
	return decodeObjectSlow(body, allowed)
}

// decodeObjectSlow is decodeObject with encoding/json's Decoder, token by
// token: what says exactly what is wrong with a body.
func decodeObjectSlow(body []byte, allowed []string) (map[string]json.RawMessage, *Error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, invalid("the request body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return nil, invalid("the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid("the request body is not valid JSON: %s", jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, invalid("the request body must be a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalid("the request body is not valid JSON: %s", jsonErr(err))
		}
		name, _ := tok.(string)
		// nil allows any name (a map such as a form's answers).
		if allowed != nil && !slices.Contains(allowed, name) {
			return nil, invalid("unknown field %q; allowed fields are %s", truncate(name, 40), strings.Join(allowed, ", "))
		}
		if _, dup := fields[name]; dup {
			return nil, invalid("field %q appears twice", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, invalid("field %q is not valid JSON: %s", name, jsonErr(err))
		}
		fields[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, invalid("the request body is not valid JSON: %s", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("the request body has data after the JSON object")
	}
	return fields, nil
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "unexpected end of input"
	}
	return err.Error()
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func jsonString(raw json.RawMessage, name string) (string, *Error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", invalid("%s must be a string", name)
	}
	if s, ok := plainString(raw); ok {
		return s, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid("%s must be a string", name)
	}
	return s, nil
}

func jsonBool(raw json.RawMessage, name string) (bool, *Error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, invalid("%s must be true or false", name)
}

// decodeOptions reads an array of options, each a label string or an
// object {label, description?, recommended?}; field is the member's name
// in messages.
func decodeOptions(raw json.RawMessage, field string, lim Limits) ([]store.Option, *Error) {
	shape := field + ` must be an array of strings or {"label","description","recommended"} objects`
	if raw[0] != '[' {
		return nil, invalid("%s", shape)
	}
	arr, ok := splitArray(raw)
	if !ok {
		return nil, invalid("%s", shape)
	}
	if len(arr) > lim.MaxOptions {
		return nil, invalid("%s has %d entries; the limit is %d", field, len(arr), lim.MaxOptions)
	}
	opts := make([]store.Option, 0, len(arr))
	recommended := -1
	skeletons := make([]string, 0, len(arr))
	for i, el := range arr {
		name := field + "[" + strconv.Itoa(i) + "]"
		o, verr := decodeOption(el, name)
		if verr != nil {
			return nil, verr
		}
		s := o.Label
		if strings.TrimSpace(s) == "" {
			return nil, invalid("%s is empty", name)
		}
		if n := utf8.RuneCountInString(s); n > lim.MaxOptionLength {
			return nil, invalid("%s is %d characters long; the limit is %d", name, n, lim.MaxOptionLength)
		}
		if verr := checkText(s, name, false); verr != nil {
			return nil, verr
		}
		if slices.ContainsFunc(opts, func(p store.Option) bool { return p.Label == s }) {
			return nil, invalid("%s repeats the option %q", name, truncate(s, 60))
		}
		skel := skeleton(s)
		if j := slices.Index(skeletons, skel); j >= 0 {
			return nil, invalid("%s looks the same as %s[%d] (they differ only in invisible characters)", name, field, j)
		}
		skeletons = append(skeletons, skel)
		if o.Recommended {
			if recommended >= 0 {
				return nil, invalid("%s and %s[%d] are both recommended; at most one option may be", name, field, recommended)
			}
			recommended = i
		}
		opts = append(opts, o)
	}
	return opts, nil
}

// decodeOption reads one option: a label, or {label, description?, recommended?}.
func decodeOption(raw json.RawMessage, name string) (store.Option, *Error) {
	if raw[0] != '{' {
		s, verr := jsonString(raw, name)
		if verr != nil {
			return store.Option{}, invalid(`%s must be a string or an object {"label","description","recommended"}`, name)
		}
		return store.Option{Label: s}, nil
	}
	fields, verr := decodeObject(raw, []string{"label", "description", "recommended"})
	if verr != nil {
		return store.Option{}, &Error{Code: verr.Code, Message: name + ": " + verr.Message}
	}
	var o store.Option
	lraw, ok := fields["label"]
	if !ok || isNull(lraw) {
		return o, invalid("%s.label is required", name)
	}
	if o.Label, verr = jsonString(lraw, name+".label"); verr != nil {
		return o, verr
	}
	if raw, ok := fields["description"]; ok && !isNull(raw) {
		if o.Description, verr = jsonString(raw, name+".description"); verr != nil {
			return o, verr
		}
		if n := utf8.RuneCountInString(o.Description); n > MaxDescriptionChars {
			return o, invalid("%s.description is %d characters long; the limit is %d", name, n, MaxDescriptionChars)
		}
		if verr := checkText(o.Description, name+".description", true); verr != nil {
			return o, verr
		}
	}
	if raw, ok := fields["recommended"]; ok && !isNull(raw) {
		if o.Recommended, verr = jsonBool(raw, name+".recommended"); verr != nil {
			return o, verr
		}
	}
	return o, nil
}

func labels(opts []store.Option) []string {
	out := make([]string, len(opts))
	for i, o := range opts {
		out[i] = o.Label
	}
	return out
}

// detailed reports whether any option has more than a label.
func detailed(opts []store.Option) bool {
	return slices.ContainsFunc(opts, func(o store.Option) bool { return o.Description != "" || o.Recommended })
}

// decodeTimeout reads the timeout in seconds; a whole number outside the
// range is clamped with a warning, or refused, as lim.TimeoutOutOfRange says.
func decodeTimeout(raw json.RawMessage, lim Limits) (time.Duration, string, *Error) {
	if lim.TimeoutOutOfRange == TimeoutReject {
		d, verr := decodeSeconds(raw, "timeout", lim)
		return d, "", verr
	}
	s := string(raw)
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" || (len(digits) > 1 && digits[0] == '0') {
		return 0, "", invalid("timeout must be a whole number of seconds (from %d to %d)", int64(lim.MinTimeout/time.Second), int64(lim.MaxTimeout/time.Second))
	}
	// Past what an int64 of nanoseconds holds is past any maximum.
	d := lim.MaxTimeout + time.Second
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n <= math.MaxInt64/int64(time.Second) && n >= math.MinInt64/int64(time.Second) {
		d = time.Duration(n) * time.Second
	} else if s[0] == '-' {
		d = lim.MinTimeout - time.Second
	}
	switch {
	case d < lim.MinTimeout:
		return lim.MinTimeout, fmt.Sprintf("timeout %s is below the minimum; using %d seconds", string(raw), int64(lim.MinTimeout/time.Second)), nil
	case d > lim.MaxTimeout:
		return lim.MaxTimeout, fmt.Sprintf("timeout %s is above the maximum; using %d seconds", string(raw), int64(lim.MaxTimeout/time.Second)), nil
	}
	return d, "", nil
}

// decodeSeconds reads a whole number of seconds from lim.MinTimeout to
// lim.MaxTimeout; name is the field the message names.
func decodeSeconds(raw json.RawMessage, name string, lim Limits) (time.Duration, *Error) {
	bad := invalid("%s must be a whole number of seconds from %d to %d", name, int64(lim.MinTimeout/time.Second), int64(lim.MaxTimeout/time.Second))
	s := string(raw)
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) || strings.ContainsAny(s, ".eE") {
		return 0, bad
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/int64(time.Second) {
		return 0, bad
	}
	d := time.Duration(n) * time.Second
	if d < lim.MinTimeout || d > lim.MaxTimeout {
		return 0, bad
	}
	return d, nil
}

func decodeMetadata(raw json.RawMessage) (json.RawMessage, *Error) {
	if raw[0] != '{' {
		return nil, invalid("metadata must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, invalid("metadata is not valid JSON")
	}
	if buf.Len() > MaxMetadataBytes {
		return nil, invalid("metadata is %d bytes; the limit is %d", buf.Len(), MaxMetadataBytes)
	}
	return buf.Bytes(), nil
}

// checkText refuses control characters (other than tab and, when multiline,
// newlines), the bidirectional overrides that can make one option look like
// another on the answer page, and invisible characters (see invisibleAt).
func checkText(s, name string, multiline bool) *Error {
	if plainText(s, multiline) {
		return nil
	}
	pos := 0
	for i, r := range s {
		pos++
		switch {
		case r == '\t', multiline && (r == '\n' || r == '\r'):
			continue
		case r == utf8.RuneError:
			return invalid("%s contains an invalid character (U+FFFD, often a broken surrogate escape)", name)
		case unicode.IsControl(r):
			return invalid("%s contains the control character U+%04X", name, r)
		case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E, r == 0x200F, r == 0x061C:
			return invalid("%s contains the bidirectional control U+%04X, which can disguise text", name, r)
		case invisibleAt(s, i):
			return invalid("%s contains an invisible character U+%04X at position %d", name, r, pos)
		}
	}
	return nil
}

// plainText: s is printable ASCII (and tabs, and newlines when
// multiline), which checkText passes without looking at each rune.
func plainText(s string, multiline bool) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 0x20 && c < 0x7f, c == '\t':
		case multiline && (c == '\n' || c == '\r'):
		default:
			return false
		}
	}
	return true
}

// Invisible characters draw nothing, so text that contains them is not the
// text a person sees: "No" and "No\u200b" are two options that look the
// same, and tag characters (U+E0020..U+E007F) spell out hidden ASCII for a
// language model to read. The set is Unicode's Default_Ignorable_Code_Point
// (format characters Cf, variation selectors, Hangul fillers and the other
// Other_Default_Ignorable_Code_Point) plus the whole tag block; the
// prepended concatenation marks (U+0600..U+0605 etc.), which are Cf but
// visible, are not in it.
//
// Three uses are real text, not hiding, and stay allowed:
//   - U+200D ZERO WIDTH JOINER and U+200C ZERO WIDTH NON-JOINER between two
//     visible non-ASCII characters: emoji sequences (👩‍💻), Persian and Indic
//     spelling (می‌خواهم). Never next to ASCII, never two in a row.
//   - U+FE0E / U+FE0F (text / emoji presentation), once, after a visible
//     non-ASCII character or a keycap base (0-9 # *): ❤️, 1️⃣.
//   - the tag sequences of the three subdivision flags Unicode recommends
//     (England, Scotland, Wales: 🏴 + gbeng/gbsct/gbwls + cancel tag).
//
// Options are also compared with every such character removed (see
// skeleton), so two options that look the same can never both pass.
func invisibleAt(s string, i int) bool {
	r, size := utf8.DecodeRuneInString(s[i:])
	if !isInvisible(r) {
		return false
	}
	prev, _ := utf8.DecodeLastRuneInString(s[:i])
	next, _ := utf8.DecodeRuneInString(s[i+size:])
	switch {
	case r == 0x200C || r == 0x200D:
		return i == 0 || i+size == len(s) || !visibleNonASCII(prev) || !visibleNonASCII(next)
	case r == 0xFE0E || r == 0xFE0F:
		if i == 0 || prev == 0xFE0E || prev == 0xFE0F {
			return true
		}
		return !visibleNonASCII(prev) && !strings.ContainsRune("0123456789#*", prev)
	case r >= 0xE0020 && r <= 0xE007F:
		return !inFlagTag(s, i)
	}
	return true
}

func isInvisible(r rune) bool {
	if r < 0xAD {
		return false
	}
	if r >= 0xE0000 && r <= 0xE0FFF {
		return true // tags and the rest of the ignorable plane-14 block
	}
	return (unicode.Is(unicode.Cf, r) && !unicode.Is(unicode.Prepended_Concatenation_Mark, r)) ||
		unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r)
}

// visibleNonASCII: a character a joiner or presentation selector may attach
// to. Variation selectors count, so that ❤️‍🔥 (U+2764 U+FE0F ZWJ U+1F525) passes.
func visibleNonASCII(r rune) bool {
	if r == utf8.RuneError || r < 0x80 || unicode.IsSpace(r) || unicode.IsControl(r) {
		return false
	}
	return r == 0xFE0E || r == 0xFE0F || !isInvisible(r)
}

// flagSequences are the subdivision flags in Unicode's recommended emoji
// set: a black flag, the tag letters of gbeng/gbsct/gbwls, a cancel tag.
var flagSequences = func() []string {
	var out []string
	for _, code := range []string{"gbeng", "gbsct", "gbwls"} {
		seq := "\U0001F3F4"
		for _, c := range code {
			seq += string(rune(0xE0000 + c))
		}
		out = append(out, seq+"\U000E007F")
	}
	return out
}()

// inFlagTag reports whether the tag character at byte i of s belongs to one
// of flagSequences.
func inFlagTag(s string, i int) bool {
	start := i // back to the first tag character of this run
	for {
		r, size := utf8.DecodeLastRuneInString(s[:start])
		if r < 0xE0020 || r > 0xE007F {
			break
		}
		start -= size
	}
	flag := start - utf8.RuneLen(0x1F3F4)
	if flag < 0 {
		return false
	}
	for _, seq := range flagSequences {
		if strings.HasPrefix(s[flag:], seq) && i < flag+len(seq) {
			return true
		}
	}
	return false
}

// skeleton is s without invisible characters: what two options are compared
// by, so that ones that look the same cannot both be offered.
func skeleton(s string) string {
	return strings.Map(func(r rune) rune {
		if isInvisible(r) {
			return -1
		}
		return r
	}, s)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
