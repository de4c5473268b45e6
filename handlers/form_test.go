package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// formCase is a hostile create for the richer question fields, with words
// its 400 must contain (what was wrong, and where).
type formCase struct{ name, body, says string }

func formCases() []formCase {
	q := func(fields string) string { return `{"message":"Form","questions":[` + fields + `]}` }
	many := make([]string, 11)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id":"q%d","message":"m","kind":"text"}`, i)
	}
	return []formCase{
		// options with detail
		{"option object without label", `{"message":"hi","predefinedOptions":[{"description":"d"}]}`, "predefinedOptions[0].label is required"},
		{"option label not a string", `{"message":"hi","predefinedOptions":[{"label":1}]}`, "predefinedOptions[0].label must be a string"},
		{"option unknown member", `{"message":"hi","predefinedOptions":[{"label":"a","color":"red"}]}`, `predefinedOptions[0]: unknown field "color"`},
		{"option description too long", `{"message":"hi","predefinedOptions":[{"label":"a","description":"` + strings.Repeat("d", 501) + `"}]}`, "description is 501 characters long; the limit is 500"},
		{"option description with bidi", `{"message":"hi","predefinedOptions":[{"label":"a","description":"x\u202ey"}]}`, "predefinedOptions[0].description contains the bidirectional control"},
		{"option recommended not bool", `{"message":"hi","predefinedOptions":[{"label":"a","recommended":"yes"}]}`, "predefinedOptions[0].recommended must be true or false"},
		{"two recommended", `{"message":"hi","predefinedOptions":[{"label":"a","recommended":true},{"label":"b","recommended":true}]}`, "are both recommended; at most one"},
		{"duplicate labels across shapes", `{"message":"hi","predefinedOptions":["a",{"label":"a","description":"again"}]}`, `predefinedOptions[1] repeats the option "a"`},
		{"option array in array", `{"message":"hi","predefinedOptions":[["a"]]}`, "predefinedOptions[0] must be a string or an object"},
		{"preselect without recommended", `{"message":"hi","predefinedOptions":["a","b"],"preselectRecommended":true}`, "preselectRecommended needs one of predefinedOptions marked recommended"},
		{"preselect not bool", `{"message":"hi","predefinedOptions":["a"],"preselectRecommended":1}`, "preselectRecommended must be true or false"},
		// timeout policy
		{"onTimeout not object", `{"message":"hi","onTimeout":"expire"}`, "onTimeout must be"},
		{"onTimeout without action", `{"message":"hi","onTimeout":{}}`, "onTimeout.action is required"},
		{"onTimeout unknown action", `{"message":"hi","onTimeout":{"action":"retry"}}`, `onTimeout.action "retry" is not expire, choose or keep`},
		{"onTimeout unknown member", `{"message":"hi","onTimeout":{"action":"keep","after":3}}`, `onTimeout: unknown field "after"`},
		{"choose without option", `{"message":"hi","predefinedOptions":["a"],"onTimeout":{"action":"choose"}}`, "onTimeout choose needs option"},
		{"choose an option that does not exist", `{"message":"hi","predefinedOptions":["a","b"],"onTimeout":{"action":"choose","option":"c"}}`, `onTimeout.option "c" is not one of predefinedOptions`},
		{"choose without options", `{"message":"hi","onTimeout":{"action":"choose","option":"a"}}`, `onTimeout.option "a" is not one of predefinedOptions`},
		{"keep with option", `{"message":"hi","onTimeout":{"action":"keep","option":"a"}}`, "onTimeout.option belongs only to the action choose"},
		{"choose with questions", `{"message":"hi","questions":[{"id":"a","message":"m","kind":"boolean"}],"onTimeout":{"action":"choose","option":"a"}}`, "cannot be used with questions"},
		// several questions
		{"questions not array", `{"message":"hi","questions":{"id":"a"}}`, "questions must be an array"},
		{"questions empty", `{"message":"hi","questions":[]}`, "questions is empty"},
		{"11 questions", q(strings.Join(many, ",")), "questions has 11 entries; the limit is 10"},
		{"question not object", q(`"a"`), "questions[0] must be an object"},
		{"question without id", q(`{"message":"m","kind":"text"}`), "questions[0].id is required"},
		{"question id with space", q(`{"id":"a b","message":"m","kind":"text"}`), `questions[0].id "a b" must be 1 to 64 letters`},
		{"question id too long", q(`{"id":"` + strings.Repeat("a", 65) + `","message":"m","kind":"text"}`), "must be 1 to 64 letters"},
		{"duplicate question ids", q(`{"id":"a","message":"m","kind":"text"},{"id":"a","message":"n","kind":"text"}`), `questions[1]: the id "a" is used twice`},
		{"question unknown member", q(`{"id":"a","message":"m","kind":"text","weight":2}`), `questions[0]: unknown field "weight"`},
		{"question without message", q(`{"id":"a","kind":"text"}`), `question "a": message is required`},
		{"question blank message", q(`{"id":"a","message":"  ","kind":"text"}`), `question "a": message must not be empty`},
		{"question message too long", q(`{"id":"a","message":"` + strings.Repeat("m", 1001) + `","kind":"text"}`), `question "a": message is 1001 characters long`},
		{"question without kind", q(`{"id":"a","message":"m"}`), `question "a": kind is required`},
		{"unknown kind", q(`{"id":"a","message":"m","kind":"date"}`), `question "a": kind "date" is not single, multi, text, boolean or number`},
		{"single without options", q(`{"id":"a","message":"m","kind":"single"}`), `question "a": a single question needs options`},
		{"options on text", q(`{"id":"a","message":"m","kind":"text","options":["x"]}`), `question "a": options belong only to the kinds single and multi`},
		{"question duplicate options", q(`{"id":"a","message":"m","kind":"multi","options":["x","x"]}`), `question "a": options[1] repeats the option "x"`},
		{"question two recommended", q(`{"id":"a","message":"m","kind":"single","options":[{"label":"x","recommended":true},{"label":"y","recommended":true}]}`), "both recommended"},
		{"required not bool", q(`{"id":"a","message":"m","kind":"text","required":"yes"}`), `question "a": required must be true or false`},
		{"min on boolean", q(`{"id":"a","message":"m","kind":"boolean","min":1}`), `question "a": min applies only to number`},
		{"min not a number", q(`{"id":"a","message":"m","kind":"number","min":"1"}`), `question "a": min must be a number`},
		{"min huge", q(`{"id":"a","message":"m","kind":"number","min":1e999}`), `question "a": min must be a number within the range`},
		{"min above max", q(`{"id":"a","message":"m","kind":"number","min":5,"max":1}`), `question "a": min (5) is greater than max (1)`},
		{"fractional text max", q(`{"id":"a","message":"m","kind":"text","max":2.5}`), `question "a": max must be a whole number from 0`},
		{"default of the wrong type", q(`{"id":"a","message":"m","kind":"number","default":"3"}`), `question "a": the default must be a number`},
		{"default out of range", q(`{"id":"a","message":"m","kind":"number","min":0,"max":10,"default":11}`), `question "a": the default is 11; the maximum is 10`},
		{"default not an option", q(`{"id":"a","message":"m","kind":"single","options":["x"],"default":"y"}`), `question "a": "y" is not one of its options`},
		{"default multi not array", q(`{"id":"a","message":"m","kind":"multi","options":["x"],"default":"x"}`), `question "a": the default must be an array of option labels`},
		{"default boolean string", q(`{"id":"a","message":"m","kind":"boolean","default":"true"}`), `question "a": the default must be true or false`},
		{"questions with predefinedOptions", `{"message":"hi","predefinedOptions":["a"],"questions":[{"id":"a","message":"m","kind":"text"}]}`, "questions replace predefinedOptions"},
	}
}

// formCorpus is formCases in the shared create corpus, so that the MCP
// tool is checked to give the same words.
func formCorpus() []corpusCase {
	var out []corpusCase
	for _, c := range formCases() {
		out = append(out, corpusCase{name: c.name, body: c.body, want: http.StatusBadRequest})
	}
	return out
}

func TestCreateFormBadInput(t *testing.T) {
	s := newService(t, store.NewMemory())
	tok := mint(t, "alice")
	for _, c := range formCases() {
		t.Run(c.name, func(t *testing.T) {
			w := s.do(t, s.Create, call{method: "POST", body: c.body, headers: bearer(tok)})
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			var eb errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || !strings.Contains(eb.Error.Message, c.says) {
				t.Fatalf("message %q does not say %q", eb.Error.Message, c.says)
			}
		})
	}
}

// view reads the page's JSON view of id with its capability token.
func view(t *testing.T, h *Human, id, tok string) PageView {
	t.Helper()
	w := h.svc.do(t, h.View, call{method: "POST", id: id, body: `{"token":"` + tok + `"}`})
	if w.Code != http.StatusOK {
		t.Fatalf("view: %d %s", w.Code, w.Body)
	}
	var v PageView
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func newHumanFor(t *testing.T, s *Service) *Human {
	t.Helper()
	h, err := NewHuman(s, HumanConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDescribedOptions: described and recommended options reach the page
// as given, the answer carries the label, and a plain question's view is
// unchanged (no details, no preselection).
func TestDescribedOptions(t *testing.T) {
	s := newService(t, store.NewMemory())
	h := newHumanFor(t, s)
	alice := mint(t, "alice")
	id, tok := create(t, s, alice, `{"message":"Which database?","preselectRecommended":true,"predefinedOptions":[
		{"label":"Postgres","description":"What we run today; no migration.","recommended":true},
		{"label":"SQLite","description":"One file, no server."},
		"Decide later"]}`)
	v := view(t, h, id, tok)
	if strings.Join(v.Options, "|") != "Postgres|SQLite|Decide later" || !v.Preselect || len(v.OptionDetails) != 3 ||
		!v.OptionDetails[0].Recommended || v.OptionDetails[0].Description != "What we run today; no migration." || v.OptionDetails[2].Description != "" {
		t.Fatalf("view %+v", v)
	}
	w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"selectedOptions":["SQLite"]}`, headers: map[string]string{"X-Feedback-Token": tok}})
	if w.Code != 200 {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	w = s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	var rr ResultResponse
	if err := json.Unmarshal(w.Body.Bytes(), &rr); err != nil || rr.Result == nil || strings.Join(rr.Result.SelectedOptions, "|") != "SQLite" {
		t.Fatalf("result %s", w.Body)
	}

	plain, ptok := create(t, s, alice, `{"message":"Plain","predefinedOptions":["a","b"]}`)
	if v := view(t, h, plain, ptok); v.OptionDetails != nil || v.Preselect || v.Questions != nil {
		t.Fatalf("plain question grew details: %+v", v)
	}
	// Recommended without preselect: marked, not selected.
	id2, tok2 := create(t, s, alice, `{"message":"Q","predefinedOptions":[{"label":"a","recommended":true},"b"]}`)
	if v := view(t, h, id2, tok2); v.Preselect || !v.OptionDetails[0].Recommended {
		t.Fatalf("view %+v", v)
	}
}

// TestTimeoutOutOfRange: by default a timeout outside the range is moved
// into it and the create says so; with reject it is a 400 naming the range.
func TestTimeoutOutOfRange(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	for _, c := range []struct {
		timeout string
		want    int64
		says    string
	}{
		{"1", 30, "timeout 1 is below the minimum; using 30 seconds"},
		{"0", 30, "below the minimum"},
		{"-5", 30, "below the minimum"},
		{"3601", 3600, "timeout 3601 is above the maximum; using 3600 seconds"},
		{"99999999999999999999", 3600, "above the maximum"},
		{"-99999999999999999999", 30, "below the minimum"},
	} {
		w := s.do(t, s.Create, call{method: "POST", body: `{"message":"hi","timeout":` + c.timeout + `}`, headers: bearer(alice)})
		var cr CreateResponse
		if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &cr) != nil || cr.Timeout != c.want || len(cr.Warnings) != 1 || !strings.Contains(cr.Warnings[0], c.says) {
			t.Errorf("timeout %s: %d %s", c.timeout, w.Code, w.Body)
		}
		if d := cr.ExpiresAt.Sub(cr.CreatedAt); d != time.Duration(c.want)*time.Second {
			t.Errorf("timeout %s: open for %s", c.timeout, d)
		}
	}
	if w := s.do(t, s.Create, call{method: "POST", body: `{"message":"hi","timeout":300}`, headers: bearer(alice)}); strings.Contains(w.Body.String(), "warnings") {
		t.Errorf("in-range timeout warned: %s", w.Body)
	}
	lim := validate.DefaultLimits()
	lim.TimeoutOutOfRange = validate.TimeoutReject
	rs := newServiceWith(t, store.NewMemory(), feedback.Config{Limits: lim})
	for _, tm := range []string{"1", "0", "-5", "3601", "99999999999999999999"} {
		w := rs.do(t, rs.Create, call{method: "POST", body: `{"message":"hi","timeout":` + tm + `}`, headers: bearer(alice)})
		if w.Code != 400 || !strings.Contains(w.Body.String(), "timeout must be a whole number of seconds from 30 to 3600") {
			t.Errorf("reject %s: %d %s", tm, w.Code, w.Body)
		}
	}
	// Not a whole number is wrong in either mode.
	for _, tm := range []string{`"300"`, "300.5", "1e3", "true"} {
		w := s.do(t, s.Create, call{method: "POST", body: `{"message":"hi","timeout":` + tm + `}`, headers: bearer(alice)})
		if w.Code != 400 || !strings.Contains(w.Body.String(), "timeout must be a whole number of seconds") {
			t.Errorf("clamp %s: %d %s", tm, w.Code, w.Body)
		}
	}
}

// formBody is a form with one question of each kind.
const formBody = `{"message":"Release","questions":[
	{"id":"env","message":"Where?","kind":"single","required":true,"options":["prod","staging"]},
	{"id":"checks","message":"Checks?","kind":"multi","options":["unit","e2e","load"],"min":1,"max":2},
	{"id":"note","message":"Note?","kind":"text","min":3,"max":20},
	{"id":"ok","message":"Reviewed?","kind":"boolean","required":true},
	{"id":"count","message":"How many?","kind":"number","min":1,"max":10,"required":true}]}`

// TestSubmitFormBadInput: every wrong answer to a form is a 400 that names
// the question, and the form stays open; a right one is stored typed.
func TestSubmitFormBadInput(t *testing.T) {
	s := newService(t, store.NewMemory())
	h := newHumanFor(t, s)
	alice := mint(t, "alice")
	id, tok := create(t, s, alice, formBody)
	ok := `"env":"prod","ok":true,"count":3`
	cases := []struct{ name, body, says string }{
		{"answers not an object", `{"answers":["prod"]}`, "answers must be an object"},
		{"answers duplicate id", `{"answers":{"env":"prod","env":"staging"}}`, `field "env" appears twice`},
		{"unknown question", `{"answers":{` + ok + `,"colour":"red"}}`, `answers: "colour" is not the id of a question in this form`},
		{"required missing", `{"answers":{"env":"prod","ok":true}}`, `question "count" is required and has no answer`},
		{"required null", `{"answers":{"env":null,"ok":true,"count":3}}`, `question "env" is required and has no answer`},
		{"nothing at all", `{}`, `question "env" is required`},
		{"single not an option", `{"answers":{"env":"dev","ok":true,"count":3}}`, `question "env": "dev" is not one of its options`},
		{"single as array", `{"answers":{"env":["prod"],"ok":true,"count":3}}`, `question "env": the answer must be one option's label`},
		{"multi not array", `{"answers":{` + ok + `,"checks":"unit"}}`, `question "checks": the answer must be an array of option labels`},
		{"multi duplicate", `{"answers":{` + ok + `,"checks":["unit","unit"]}}`, `question "checks": option "unit" is picked twice`},
		{"multi too many", `{"answers":{` + ok + `,"checks":["unit","e2e","load"]}}`, `question "checks": the answer picks 3 options; pick at most 2`},
		{"multi not an option", `{"answers":{` + ok + `,"checks":["smoke"]}}`, `question "checks": "smoke" is not one of its options`},
		{"text not string", `{"answers":{` + ok + `,"note":5}}`, `question "note": the answer must be a string`},
		{"text too short", `{"answers":{` + ok + `,"note":"ab"}}`, `question "note": the answer is 2 characters long; write at least 3`},
		{"text too long", `{"answers":{` + ok + `,"note":"` + strings.Repeat("x", 21) + `"}}`, `question "note": the answer is 21 characters long; the limit is 20`},
		{"text with bidi", `{"answers":{` + ok + `,"note":"ab\u202ecd"}}`, `question "note": the answer contains the bidirectional control`},
		{"boolean as string", `{"answers":{"env":"prod","ok":"yes","count":3}}`, `question "ok": the answer must be true or false`},
		{"number as string", `{"answers":{"env":"prod","ok":true,"count":"3"}}`, `question "count": the answer must be a number`},
		{"number too small", `{"answers":{"env":"prod","ok":true,"count":0}}`, `question "count": the answer is 0; the minimum is 1`},
		{"number too large", `{"answers":{"env":"prod","ok":true,"count":10.5}}`, `question "count": the answer is 10.5; the maximum is 10`},
		{"number overflow", `{"answers":{"env":"prod","ok":true,"count":1e999}}`, `question "count": the answer must be a number`},
		{"selectedOptions on a form", `{"selectedOptions":["prod"]}`, "answer with \"answers\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, via := range []string{"rest", "page"} {
				var w *httptest.ResponseRecorder
				if via == "rest" {
					w = s.do(t, s.Submit, call{method: "POST", id: id, body: c.body, headers: map[string]string{"X-Feedback-Token": tok}})
				} else {
					w = s.do(t, h.Submit, call{method: "POST", id: id, body: `{"token":"` + tok + `","answer":` + c.body + `}`})
				}
				var eb errorBody
				if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &eb) != nil || !strings.Contains(eb.Error.Message, c.says) {
					t.Fatalf("%s: %d %s, want 400 saying %q", via, w.Code, w.Body, c.says)
				}
			}
		})
	}
	if sess, _ := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, id); sess.Status != store.StatusPending {
		t.Fatalf("status %s after rejected answers", sess.Status)
	}
	// Answers to a plain question are refused too.
	plain, ptok := create(t, s, alice, `{"message":"Plain","predefinedOptions":["a"]}`)
	if w := s.do(t, s.Submit, call{method: "POST", id: plain, body: `{"answers":{"x":1}}`, headers: map[string]string{"X-Feedback-Token": ptok}}); w.Code != 400 || !strings.Contains(w.Body.String(), "answers belong to a form") {
		t.Fatalf("answers to a plain question: %d %s", w.Code, w.Body)
	}

	// Blank text and an empty multi are unanswered; the rest is stored
	// typed, in the questions' order.
	w := s.do(t, h.Submit, call{method: "POST", id: id, body: `{"token":"` + tok + `","answer":{"answers":{"count":2.5,"note":"  ","checks":[],"ok":false,"env":"staging"},"freeText":"fine"}}`})
	if w.Code != 200 {
		t.Fatalf("good answer: %d %s", w.Code, w.Body)
	}
	w = s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	var rr ResultResponse
	if err := json.Unmarshal(w.Body.Bytes(), &rr); err != nil || rr.Result == nil || string(rr.Result.Answers) != `{"env":"staging","ok":false,"count":2.5}` || rr.Result.FreeText != "fine" {
		t.Fatalf("result %s", w.Body)
	}
	if v := view(t, h, id, tok); len(v.Questions) != 5 || v.Questions[0].MessageHTML == "" || v.Result == nil {
		t.Fatalf("view %+v", v)
	}
}

// TestTimeoutKeep: with onTimeout keep, the question stays open until the
// longest timeout, and the agent's own wait ends at its timeout.
func TestTimeoutKeep(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	w := s.do(t, s.Create, call{method: "POST", body: `{"message":"Whenever you can","timeout":60,"onTimeout":{"action":"keep"}}`, headers: bearer(alice)})
	var cr CreateResponse
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &cr) != nil {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	if d := cr.ExpiresAt.Sub(cr.CreatedAt); d != time.Hour {
		t.Fatalf("a keep question is open for %s, want max_timeout (1h)", d)
	}
	sess, err := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, cr.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if got := waitEnd(sess).Sub(cr.CreatedAt); got != time.Minute {
		t.Fatalf("the agent's wait ends after %s, want its timeout (1m)", got)
	}
	// Past the asker's timeout the outcome says the question stays open.
	sess.Form.WaitUntil = time.Now().Add(-time.Second)
	res := outcomeResult(sess, "", true)
	if txt := res.Content[0].(mcp.TextContent).Text; !strings.Contains(txt, "stays open for them until") {
		t.Fatalf("text %q", txt)
	}
	// A plain question's wait ends at its deadline.
	plain := &store.Session{ExpiresAt: cr.ExpiresAt}
	if !waitEnd(plain).Equal(cr.ExpiresAt) {
		t.Fatal("waitEnd of a plain question")
	}
}

// TestMCPKeepWaitReturnsPending: interactive_feedback with wait and
// onTimeout keep returns at the asker's timeout with the question still
// pending and open, and says so.
func TestMCPKeepWaitReturnsPending(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, _ *MCPConfig, lim *validate.Limits) { lim.MinTimeout = time.Second })
	c := e.connect("http", mint(t, "alice"))
	res := callTool(t.Context(), t, c, ToolInteractiveFeedback, map[string]any{
		"message": "No hurry", "timeout": 1, "onTimeout": map[string]any{"action": "keep"}, "wait": true}, nil)
	out := outcome(t, res)
	if out.Status != store.StatusPending || time.Until(out.ExpiresAt) < 30*time.Minute {
		t.Fatalf("outcome %+v", out)
	}
	if !strings.Contains(text(res), "stays open for them until") {
		t.Fatalf("text %q", text(res))
	}
}
