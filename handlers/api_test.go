package handlers

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

func newService(t testing.TB, st store.Store) *Service {
	t.Helper()
	return newServiceWith(t, st, feedback.Config{})
}

// newServiceWith takes the core's configuration; unset limits and
// retention are the defaults.
func newServiceWith(t testing.TB, st store.Store, cfg feedback.Config) *Service {
	t.Helper()
	v, err := auth.NewVerifier(testSecret, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{
		Core: newCore(t, st, cfg), Verifier: v,
		BaseURL: func(*http.Request) string { return "https://fb.example" },
	})
}

// newCore is the question's life over st, as the root package builds it.
func newCore(t testing.TB, st store.Store, cfg feedback.Config) *feedback.Service {
	t.Helper()
	if cfg.Limits == (validate.Limits{}) {
		cfg.Limits = validate.DefaultLimits()
	}
	if cfg.Retention == 0 {
		cfg.Retention = time.Hour
	}
	hub := feedback.NewHub(st)
	t.Cleanup(func() { _ = hub.Close() })
	return feedback.NewService(hub, cfg)
}

func mint(t testing.TB, sub string, scope ...string) string {
	t.Helper()
	o := auth.TokenOptions{Subject: sub, TTL: time.Hour}
	if scope != nil {
		o.Scope = scope
	}
	tok, err := auth.Mint(testSecret, o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type call struct {
	method, path, body, ctype string
	headers                   map[string]string
	id                        string
}

func (s *Service) do(t testing.TB, h http.HandlerFunc, c call) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(c.method, "https://fb.example"+c.path, strings.NewReader(c.body))
	if c.ctype == "" {
		c.ctype = "application/json"
	}
	if c.ctype != "-" {
		req.Header.Set("Content-Type", c.ctype)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	if c.id != "" {
		req.SetPathValue("id", c.id)
	}
	w := httptest.NewRecorder()
	h(w, req)
	return w
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// create makes a session and returns its id and capability token.
func create(t testing.TB, s *Service, tok, body string) (string, string) {
	t.Helper()
	w := s.do(t, s.Create, call{method: "POST", path: "/api/feedback/create", body: body, headers: bearer(tok)})
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	var cr CreateResponse
	if err := json.Unmarshal(w.Body.Bytes(), &cr); err != nil {
		t.Fatal(err)
	}
	_, frag, ok := strings.Cut(cr.FeedbackURL, "#t=")
	if !ok {
		t.Fatalf("feedbackUrl %q has no #t= fragment", cr.FeedbackURL)
	}
	return cr.SessionID, frag
}

func errorCode(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
		t.Fatalf("error body %q is not {error:{code,message}}", w.Body)
	}
	return eb.Error.Code
}

func TestCreateResponse(t *testing.T) {
	s := newService(t, store.NewMemory())
	w := s.do(t, s.Create, call{method: "POST", path: "/api/feedback/create", headers: bearer(mint(t, "alice")),
		body: `{"message":"Ship it?","predefinedOptions":["yes","no"],"timeout":120,"metadata":{"pr":42}}`})
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var cr CreateResponse
	if err := json.Unmarshal(w.Body.Bytes(), &cr); err != nil {
		t.Fatal(err)
	}
	if cr.Status != store.StatusPending || cr.Timeout != 120 || !cr.ExpiresAt.Equal(cr.CreatedAt.Add(120*time.Second)) {
		t.Errorf("unexpected response %+v", cr)
	}
	prefix := "https://fb.example/feedback/" + cr.SessionID + "#t="
	if !strings.HasPrefix(cr.FeedbackURL, prefix) {
		t.Fatalf("feedbackUrl %q does not start with %q", cr.FeedbackURL, prefix)
	}
	tok := strings.TrimPrefix(cr.FeedbackURL, prefix)
	if len(tok) < 26 {
		t.Errorf("capability token %q is shorter than 128 bits of base32", tok)
	}
	sess, err := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, cr.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if !sess.CheckToken(tok) || string(sess.TokenHash) == tok || sess.Owner.Subject != "alice" || string(sess.Metadata) != `{"pr":42}` {
		t.Errorf("stored session wrong: %+v", sess)
	}
}

func TestLifecycle(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"Pick","predefinedOptions":["a","b","c"],"multiSelect":true}`)

	w := s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(alice)})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"status":"pending"`) {
		t.Fatalf("status: %d %s", w.Code, w.Body)
	}
	w = s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"result":null`) {
		t.Fatalf("result before answer: %d %s", w.Code, w.Body)
	}

	submit := call{method: "POST", id: id, body: `{"selectedOptions":["a","c"],"freeText":"both","nonce":"n1"}`,
		headers: map[string]string{"X-Feedback-Token": capTok}}
	w = s.do(t, s.Submit, submit)
	if w.Code != 200 {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	first := w.Body.String()
	// The same nonce again (a double click, a retried request) is the same success.
	if w = s.do(t, s.Submit, submit); w.Code != 200 || w.Body.String() != first {
		t.Fatalf("retry with same nonce: %d %s, want 200 %s", w.Code, w.Body, first)
	}
	submit.body = `{"selectedOptions":["b"],"nonce":"n2"}`
	if w = s.do(t, s.Submit, submit); w.Code != http.StatusConflict || errorCode(t, w) != "already_answered" {
		t.Fatalf("second submit: %d %s", w.Code, w.Body)
	}
	w = s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	var rr ResultResponse
	if err := json.Unmarshal(w.Body.Bytes(), &rr); err != nil {
		t.Fatal(err)
	}
	if rr.Status != store.StatusSubmitted || rr.Result == nil || strings.Join(rr.Result.SelectedOptions, ",") != "a,c" || rr.Result.FreeText != "both" {
		t.Fatalf("result: %s", w.Body)
	}
}

// TestFreeTextAnswerListsNoOptions: an answer in words alone reports
// selectedOptions as [] (clients and output schemas expect an array).
func TestFreeTextAnswerListsNoOptions(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"Say something"}`)
	if w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"hi"}`, headers: map[string]string{"X-Feedback-Token": capTok}}); w.Code != 200 {
		t.Fatalf("submit: %d", w.Code)
	}
	w := s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	if !strings.Contains(w.Body.String(), `"selectedOptions":[]`) {
		t.Fatalf("result %s", w.Body)
	}
}

// TestOwnerJWTMaySubmit: the owner answers only with a token that names
// feedback:answer; a default (unscoped), read-only or empty-scope token of
// the owner gets 403, and the result records how and by whom.
func TestOwnerJWTMaySubmit(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	id, _ := create(t, s, alice, `{"message":"Q"}`)
	for name, tok := range map[string]string{
		"default token": alice,
		"read only":     mint(t, "alice", auth.ScopeRead),
		"empty scope":   mint(t, "alice", []string{}...),
		"create+read":   mint(t, "alice", auth.ScopeCreate, auth.ScopeRead),
	} {
		if w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"x"}`, headers: bearer(tok)}); w.Code != http.StatusForbidden {
			t.Fatalf("%s: %d %s, want 403", name, w.Code, w.Body)
		}
	}
	if w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"x"}`, headers: bearer(mint(t, "bob", auth.ScopeAnswer))}); w.Code != 404 {
		t.Fatalf("another subject's answer token: %d %s, want 404", w.Code, w.Body)
	}
	if w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"x"}`, headers: bearer(mint(t, "alice", auth.ScopeAnswer))}); w.Code != 200 {
		t.Fatalf("owner's answer token: %d %s, want 200", w.Code, w.Body)
	}
	w := s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	var rr ResultResponse
	if err := json.Unmarshal(w.Body.Bytes(), &rr); err != nil || rr.Result == nil || rr.Result.Via != "owner" || rr.Result.AnsweredBy != "alice" {
		t.Fatalf("result %s: want via owner, answeredBy alice", w.Body)
	}
}

func TestSubmitAfterDeadlineAndCancel(t *testing.T) {
	st := store.NewMemory()
	// A session created an hour ago with a 30 s timeout is past its deadline.
	var past atomic.Bool
	past.Store(true)
	s := newServiceWith(t, st, feedback.Config{Now: func() time.Time {
		if past.Load() {
			return time.Now().Add(-time.Hour)
		}
		return time.Now()
	}})
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"late","timeout":30}`)
	past.Store(false)
	w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"x"}`, headers: map[string]string{"X-Feedback-Token": capTok}})
	if w.Code != http.StatusGone {
		t.Fatalf("submit after deadline: %d %s, want 410", w.Code, w.Body)
	}
	if w = s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(alice)}); !strings.Contains(w.Body.String(), `"status":"expired"`) {
		t.Fatalf("status after deadline: %s", w.Body)
	}

	id, capTok = create(t, s, alice, `{"message":"withdrawn"}`)
	if _, err := st.Cancel(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	w = s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"x"}`, headers: map[string]string{"X-Feedback-Token": capTok}})
	if w.Code != http.StatusGone {
		t.Fatalf("submit after cancel: %d %s, want 410", w.Code, w.Body)
	}
}

func TestConcurrentSubmitsOneWinner(t *testing.T) {
	s := newService(t, store.NewMemory())
	id, capTok := create(t, s, mint(t, "alice"), `{"message":"race","predefinedOptions":["a","b"]}`)
	var wg sync.WaitGroup
	codes := make([]int, 100)
	for i := range codes {
		wg.Go(func() {
			w := s.do(t, s.Submit, call{method: "POST", id: id, body: fmt.Sprintf(`{"selectedOptions":["a"],"nonce":"n%d"}`, i),
				headers: map[string]string{"X-Feedback-Token": capTok}})
			codes[i] = w.Code
		})
	}
	wg.Wait()
	won := 0
	for _, c := range codes {
		switch c {
		case 200:
			won++
		case 409:
		default:
			t.Errorf("unexpected status %d", c)
		}
	}
	if won != 1 {
		t.Fatalf("%d submits won, want exactly 1", won)
	}
}

func TestHealth(t *testing.T) {
	st := store.NewMemory()
	s := newService(t, st)
	w := s.do(t, s.Health, call{method: "GET"})
	var body map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != 200 || body["status"] != "ok" || body["store"] != "ok" || body["service"] == "" || body["timestamp"] == nil {
		t.Fatalf("health: %d %s", w.Code, w.Body)
	}
	_ = st.Close()
	w = s.do(t, s.Health, call{method: "GET"})
	if w.Code != 503 || !strings.Contains(w.Body.String(), `"status":"degraded"`) || w.Header().Get("Retry-After") == "" {
		t.Fatalf("health with closed store: %d %s", w.Code, w.Body)
	}
}

func TestStoreDownIs503(t *testing.T) {
	st := store.NewMemory()
	s := newService(t, st)
	alice := mint(t, "alice")
	id, _ := create(t, s, alice, `{"message":"Q"}`)
	_ = st.Close()
	for name, w := range map[string]*httptest.ResponseRecorder{
		"create": s.do(t, s.Create, call{method: "POST", body: `{"message":"Q"}`, headers: bearer(alice)}),
		"status": s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(alice)}),
	} {
		if w.Code != 503 || w.Header().Get("Retry-After") == "" || errorCode(t, w) != "store_unavailable" {
			t.Errorf("%s with store down: %d %s", name, w.Code, w.Body)
		}
	}
}

func TestScopes(t *testing.T) {
	s := newService(t, store.NewMemory())
	readOnly := mint(t, "alice", auth.ScopeRead)
	w := s.do(t, s.Create, call{method: "POST", body: `{"message":"Q"}`, headers: bearer(readOnly)})
	if w.Code != 403 || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("create with read-only scope: %d %s", w.Code, w.Header())
	}
	id, _ := create(t, s, mint(t, "alice", auth.ScopeCreate), `{"message":"Q"}`)
	if w := s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(mint(t, "alice", auth.ScopeCreate))}); w.Code != 403 {
		t.Fatalf("status with create-only scope: %d", w.Code)
	}
	if w := s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(readOnly)}); w.Code != 200 {
		t.Fatalf("status with read scope: %d %s", w.Code, w.Body)
	}
}

// TestCreateBadInput is the corpus from the issue: each input is refused
// with the status a client can act on and a message saying what was wrong.
// corpusCase is one bad create body and the status the REST API gives it.
type corpusCase struct {
	name, body, ctype string
	want              int
}

// corpusOpts is a JSON array of n distinct options of size digits each.
func corpusOpts(n, size int) string {
	o := make([]string, n)
	for i := range o {
		o[i] = fmt.Sprintf("%q", fmt.Sprintf("%0*d", size, i))
	}
	return "[" + strings.Join(o, ",") + "]"
}

// createCorpus is the bad-input corpus of a create. The MCP tool gets the
// same one as its arguments (TestMCP), so both give the same answers.
func createCorpus() []corpusCase {
	opts := corpusOpts
	return append([]corpusCase{
		{"empty body", ``, "", 400},
		{"whitespace body", "  \n", "", 400},
		{"oversized body", `{"message":"` + strings.Repeat("a", 70<<10) + `"}`, "", 413},
		{"no content type", `{"message":"hi"}`, "-", 415},
		{"text/plain", `{"message":"hi"}`, "text/plain", 415},
		{"form", `message=hi`, "application/x-www-form-urlencoded", 415},
		{"array", `[{"message":"hi"}]`, "", 400},
		{"string", `"hi"`, "", 400},
		{"number", `42`, "", 400},
		{"null", `null`, "", 400},
		{"trailing data", `{"message":"hi"}{"message":"again"}`, "", 400},
		{"trailing garbage", `{"message":"hi"} x`, "", 400},
		{"unknown field", `{"message":"hi","isAdmin":true}`, "", 400},
		{"case-variant field", `{"MESSAGE":"hi"}`, "", 400},
		{"duplicate field", `{"message":"hi","message":"again"}`, "", 400},
		{"deep nesting", strings.Repeat("[", 20000), "", 400},
		{"deep nesting in metadata", `{"message":"hi","metadata":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}`, "", 400},
		{"invalid utf-8", "{\"message\":\"h\xffi\"}", "", 400},
		{"lone surrogate", `{"message":"h\ud800i"}`, "", 400},
		{"missing message", `{"predefinedOptions":["a"]}`, "", 400},
		{"empty message", `{"message":""}`, "", 400},
		{"blank message", `{"message":"   \n"}`, "", 400},
		{"message 1001 chars", `{"message":"` + strings.Repeat("é", 1001) + `"}`, "", 400},
		{"message not a string", `{"message":42}`, "", 400},
		{"message NUL", `{"message":"a\u0000b"}`, "", 400},
		{"message ESC", `{"message":"a\u001b[31mb"}`, "", 400},
		{"message C1", `{"message":"a\u0085b"}`, "", 400},
		{"message RLO", `{"message":"a\u202eb"}`, "", 400},
		{"message LRI", `{"message":"a\u2066b"}`, "", 400},
		{"11 options", `{"message":"hi","predefinedOptions":` + opts(11, 1) + `}`, "", 400},
		{"10000 options", `{"message":"hi","predefinedOptions":` + opts(10000, 1) + `}`, "", 413},
		{"empty option", `{"message":"hi","predefinedOptions":["a",""]}`, "", 400},
		{"blank option", `{"message":"hi","predefinedOptions":["a","  "]}`, "", 400},
		{"duplicate options", `{"message":"hi","predefinedOptions":["a","a"]}`, "", 400},
		{"101-char option", `{"message":"hi","predefinedOptions":` + opts(1, 101) + `}`, "", 400},
		{"non-string option", `{"message":"hi","predefinedOptions":["a",1]}`, "", 400},
		{"null option", `{"message":"hi","predefinedOptions":["a",null]}`, "", 400},
		{"options not array", `{"message":"hi","predefinedOptions":"a,b"}`, "", 400},
		{"option with newline", `{"message":"hi","predefinedOptions":["a\nb"]}`, "", 400},
		{"option with bidi", `{"message":"hi","predefinedOptions":["\u202eyes"]}`, "", 400},
		{"timeout 1e400", `{"message":"hi","timeout":1e400}`, "", 400},
		{"timeout 1e3", `{"message":"hi","timeout":1e3}`, "", 400},
		{"timeout string", `{"message":"hi","timeout":"300"}`, "", 400},
		{"timeout fraction", `{"message":"hi","timeout":300.5}`, "", 400},
		{"timeout bool", `{"message":"hi","timeout":true}`, "", 400},
		{"metadata > 2 KiB", `{"message":"hi","metadata":{"a":"` + strings.Repeat("x", 2100) + `"}}`, "", 400},
		{"metadata array", `{"message":"hi","metadata":[1,2]}`, "", 400},
		{"metadata string", `{"message":"hi","metadata":"x"}`, "", 400},
		{"multiSelect string", `{"message":"hi","predefinedOptions":["a"],"multiSelect":"yes"}`, "", 400},
		{"allowFreeText number", `{"message":"hi","allowFreeText":1}`, "", 400},
		{"nothing to answer", `{"message":"hi","allowFreeText":false}`, "", 400},
		{"multiSelect without options", `{"message":"hi","multiSelect":true}`, "", 400},
	}, formCorpus()...)
}

func TestCreateBadInput(t *testing.T) {
	s := newService(t, store.NewMemory())
	tok := mint(t, "alice")
	opts := corpusOpts
	cases := createCorpus()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := s.do(t, s.Create, call{method: "POST", body: c.body, ctype: c.ctype, headers: bearer(tok)})
			if w.Code != c.want {
				t.Fatalf("status %d, want %d: %s", w.Code, c.want, w.Body)
			}
			errorCode(t, w)
		})
	}
	good := []struct{ name, body string }{
		{"1000 chars", `{"message":"` + strings.Repeat("é", 1000) + `"}`},
		{"1000 emoji", `{"message":"` + strings.Repeat("😀", 1000) + `"}`},
		{"10 options of 100", `{"message":"hi","predefinedOptions":` + opts(10, 100) + `}`},
		{"null options", `{"message":"hi","predefinedOptions":null}`},
		{"timeout 30", `{"message":"hi","timeout":30}`},
		{"timeout 3600", `{"message":"hi","timeout":3600}`},
		{"script tag is data", `{"message":"<script>alert(1)</script> [x](javascript:alert(1))"}`},
		{"tabs and newlines", `{"message":"line1\n\tline2\r\n"}`},
		{"nested metadata", `{"message":"hi","metadata":{"a":{"b":[1,2,{"c":null}]}}}`},
	}
	for _, c := range good {
		t.Run("accepts "+c.name, func(t *testing.T) {
			if w := s.do(t, s.Create, call{method: "POST", body: c.body, headers: bearer(tok)}); w.Code != 201 {
				t.Fatalf("status %d, want 201: %s", w.Code, w.Body)
			}
		})
	}
}

func TestSubmitBadInput(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	single, capTok := create(t, s, alice, `{"message":"Pick one","predefinedOptions":["a","b"],"allowFreeText":false}`)
	_, otherTok := create(t, s, alice, `{"message":"other"}`)
	cases := []struct {
		name, id, body, token string
		want                  int
	}{
		{"no token", single, `{"selectedOptions":["a"]}`, "", 404},
		{"wrong token", single, `{"selectedOptions":["a"]}`, "AAAAAAAAAAAAAAAAAAAAAAAAAA", 404},
		{"another session's token", single, `{"selectedOptions":["a"]}`, otherTok, 404},
		{"unknown id", "00000000-0000-4000-8000-000000000000", `{"selectedOptions":["a"]}`, capTok, 404},
		{"malformed id", "../../etc/passwd", `{"selectedOptions":["a"]}`, capTok, 404},
		{"NUL id", "%00", `{"selectedOptions":["a"]}`, capTok, 404},
		{"uppercase id", strings.ToUpper(single), `{"selectedOptions":["a"]}`, capTok, 404},
		{"10 KB id", strings.Repeat("a", 10<<10), `{"selectedOptions":["a"]}`, capTok, 404},
		{"option not offered", single, `{"selectedOptions":["c"]}`, capTok, 400},
		{"two options on single select", single, `{"selectedOptions":["a","b"]}`, capTok, 400},
		{"duplicate option", single, `{"selectedOptions":["a","a"]}`, capTok, 400},
		{"free text not allowed", single, `{"selectedOptions":["a"],"freeText":"x"}`, capTok, 400},
		{"empty answer", single, `{}`, capTok, 400},
		{"options not array", single, `{"selectedOptions":"a"}`, capTok, 400},
		{"non-string option", single, `{"selectedOptions":[1]}`, capTok, 400},
		{"unknown field", single, `{"selectedOptions":["a"],"admin":true}`, capTok, 400},
		{"nonce too long", single, `{"selectedOptions":["a"],"nonce":"` + strings.Repeat("n", 129) + `"}`, capTok, 400},
		{"nonce with space", single, `{"selectedOptions":["a"],"nonce":"a b"}`, capTok, 400},
		{"not json", single, `selectedOptions=a`, capTok, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := s.do(t, s.Submit, call{method: "POST", id: c.id, body: c.body, headers: map[string]string{"X-Feedback-Token": c.token}})
			if w.Code != c.want {
				t.Fatalf("status %d, want %d: %s", w.Code, c.want, w.Body)
			}
			errorCode(t, w)
		})
	}
	// Nothing above changed the session.
	if sess, _ := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, single); sess.Status != store.StatusPending {
		t.Fatalf("session status %s after rejected submits, want pending", sess.Status)
	}
	free, freeTok := create(t, s, alice, `{"message":"Say"}`)
	w := s.do(t, s.Submit, call{method: "POST", id: free, body: `{"freeText":"` + strings.Repeat("x", 10001) + `"}`, headers: map[string]string{"X-Feedback-Token": freeTok}})
	if w.Code != 400 {
		t.Fatalf("10001-char freeText: %d", w.Code)
	}
	w = s.do(t, s.Submit, call{method: "POST", id: free, body: `{"freeText":"` + strings.Repeat("x", 10000) + `"}`, headers: map[string]string{"X-Feedback-Token": freeTok}})
	if w.Code != 200 {
		t.Fatalf("10000-char freeText: %d %s", w.Code, w.Body)
	}
}

// TestTokenCorpus: each bad token is refused with 401 and a challenge, and a
// valid token of another subject sees 404, never the session.
func TestTokenCorpus(t *testing.T) {
	s := newService(t, store.NewMemory())
	id, _ := create(t, s, mint(t, "alice"), `{"message":"Q"}`)
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims, hdr map[string]any) string {
		tk := jwt.NewWithClaims(m, claims)
		for k, v := range hdr {
			tk.Header[k] = v
		}
		str, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return str
	}
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims { c := valid(); c[k] = v; return c }
	without := func(k string) jwt.MapClaims { c := valid(); delete(c, k); return c }
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	noneTok := b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(fmt.Sprintf(`{"sub":"alice","exp":%d}`, now.Add(time.Hour).Unix())) + "."
	cases := map[string]string{
		"none alg":              noneTok,
		"HS512":                 sign(jwt.SigningMethodHS512, testSecret, valid(), nil),
		"wrong secret":          sign(jwt.SigningMethodHS256, []byte("another-secret-that-is-32-bytes-long!"), valid(), nil),
		"expired beyond leeway": sign(jwt.SigningMethodHS256, testSecret, with("exp", now.Add(-time.Minute).Unix()), nil),
		"future iat":            sign(jwt.SigningMethodHS256, testSecret, with("iat", now.Add(time.Hour).Unix()), nil),
		"missing exp":           sign(jwt.SigningMethodHS256, testSecret, without("exp"), nil),
		"missing sub":           sign(jwt.SigningMethodHS256, testSecret, without("sub"), nil),
		"crit header":           sign(jwt.SigningMethodHS256, testSecret, valid(), map[string]any{"crit": []string{"exp"}}),
		"1 MiB of dots":         strings.Repeat(".", 1<<20),
		"8 KiB + 1":             strings.Repeat("a", auth.MaxBearerLength+1),
		"garbage":               "not-a-jwt",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			w := s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(tok)})
			if w.Code != 401 {
				t.Fatalf("status %d, want 401: %s", w.Code, w.Body)
			}
			ch := w.Header().Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `resource_metadata="https://fb.example/.well-known/oauth-protected-resource"`) {
				t.Fatalf("WWW-Authenticate %q", ch)
			}
			if strings.Contains(w.Body.String(), tok[:min(len(tok), 20)]) && len(tok) > 20 {
				t.Fatalf("error body echoes the token")
			}
		})
	}
	t.Run("expired within leeway", func(t *testing.T) {
		tok := sign(jwt.SigningMethodHS256, testSecret, with("exp", now.Add(-10*time.Second).Unix()), nil)
		if w := s.do(t, s.Status, call{method: "GET", id: id, headers: bearer(tok)}); w.Code != 200 {
			t.Fatalf("status %d, want 200 (30 s leeway)", w.Code)
		}
	})
	t.Run("lower-case scheme", func(t *testing.T) {
		h := map[string]string{"Authorization": "bearer " + mint(t, "alice")}
		if w := s.do(t, s.Status, call{method: "GET", id: id, headers: h}); w.Code != 200 {
			t.Fatalf("status %d, want 200", w.Code)
		}
	})
	t.Run("basic auth", func(t *testing.T) {
		w := s.do(t, s.Status, call{method: "GET", id: id, headers: map[string]string{"Authorization": "Basic YTpi"}})
		if w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), "invalid_request") {
			t.Fatalf("status %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("no token has no error param", func(t *testing.T) {
		w := s.do(t, s.Status, call{method: "GET", id: id})
		if w.Code != 401 || strings.Contains(w.Header().Get("WWW-Authenticate"), "error=") {
			t.Fatalf("status %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("another user's valid token", func(t *testing.T) {
		for _, h := range []http.HandlerFunc{s.Status, s.Result} {
			if w := s.do(t, h, call{method: "GET", id: id, headers: bearer(mint(t, "bob"))}); w.Code != 404 {
				t.Fatalf("status %d, want 404", w.Code)
			}
		}
	})
}

func TestIssuerAudience(t *testing.T) {
	v, err := auth.NewVerifier(testSecret, "https://issuer.example", "feedback")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Core: newCore(t, store.NewMemory(), feedback.Config{}), Verifier: v,
		BaseURL: func(*http.Request) string { return "https://fb.example" }})
	for name, o := range map[string]auth.TokenOptions{
		"no iss or aud": {Subject: "a", TTL: time.Hour},
		"wrong iss":     {Subject: "a", TTL: time.Hour, Issuer: "https://evil.example", Audience: "feedback"},
		"wrong aud":     {Subject: "a", TTL: time.Hour, Issuer: "https://issuer.example", Audience: "other"},
	} {
		tok, _ := auth.Mint(testSecret, o)
		if w := s.do(t, s.Create, call{method: "POST", body: `{"message":"Q"}`, headers: bearer(tok)}); w.Code != 401 {
			t.Errorf("%s: %d, want 401", name, w.Code)
		}
	}
	tok, _ := auth.Mint(testSecret, auth.TokenOptions{Subject: "a", TTL: time.Hour, Issuer: "https://issuer.example", Audience: "feedback"})
	if w := s.do(t, s.Create, call{method: "POST", body: `{"message":"Q"}`, headers: bearer(tok)}); w.Code != 201 {
		t.Errorf("matching iss and aud: %d %s", w.Code, w.Body)
	}
}

func TestResourceMetadata(t *testing.T) {
	s := newService(t, store.NewMemory())
	w := s.do(t, s.ResourceMetadata, call{method: "GET"})
	body, _ := io.ReadAll(w.Body)
	var md map[string]any
	if err := json.Unmarshal(body, &md); err != nil || md["resource"] != "https://fb.example" {
		t.Fatalf("metadata %s", body)
	}
}

// TestCancel: the owner withdraws over REST with the semantics of the MCP
// tool cancel_feedback (idempotent; 409 once answered; 404 for others).
func TestCancel(t *testing.T) {
	s := newService(t, store.NewMemory())
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"Deploy?"}`)
	cancel := func(tok, id string) *httptest.ResponseRecorder {
		return s.do(t, s.Cancel, call{method: "POST", path: "/api/feedback/" + id + "/cancel", headers: bearer(tok), id: id})
	}
	if w := cancel(mint(t, "mallory"), id); w.Code != http.StatusNotFound {
		t.Fatalf("someone else's cancel: %d %s", w.Code, w.Body)
	}
	if w := cancel(mint(t, "alice", auth.ScopeRead), id); w.Code != http.StatusForbidden {
		t.Fatalf("read-only token: %d %s", w.Code, w.Body)
	}
	if w := cancel(alice, "00000000-0000-4000-8000-000000000000"); w.Code != http.StatusNotFound {
		t.Fatalf("unknown id: %d %s", w.Code, w.Body)
	}
	for i := range 2 {
		w := cancel(alice, id)
		var st StatusResponse
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &st) != nil || st.Status != store.StatusCancelled {
			t.Fatalf("cancel #%d: %d %s", i+1, w.Code, w.Body)
		}
	}
	// A cancelled question can no longer be answered.
	w := s.do(t, s.Submit, call{method: "POST", path: "/api/feedback/" + id + "/submit", id: id,
		headers: map[string]string{"X-Feedback-Token": capTok}, body: `{"freeText":"yes"}`})
	if w.Code != http.StatusGone {
		t.Fatalf("submit after cancel: %d %s", w.Code, w.Body)
	}
	id2, capTok2 := create(t, s, alice, `{"message":"Again?"}`)
	if w := s.do(t, s.Submit, call{method: "POST", path: "/api/feedback/" + id2 + "/submit", id: id2,
		headers: map[string]string{"X-Feedback-Token": capTok2}, body: `{"freeText":"yes"}`}); w.Code != http.StatusOK {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	if w := cancel(alice, id2); w.Code != http.StatusConflict || errorCode(t, w) != "already_answered" {
		t.Fatalf("cancel after answer: %d %s", w.Code, w.Body)
	}
}

// TestWithholdLink: with link_to_agent off the agent gets the session id
// and never the capability link.
func TestWithholdLink(t *testing.T) {
	v, err := auth.NewVerifier(testSecret, "", "")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Core: newCore(t, store.NewMemory(), feedback.Config{}), Verifier: v, WithholdLink: true,
		BaseURL: func(*http.Request) string { return "https://fb.example" }})
	w := s.do(t, s.Create, call{method: "POST", path: "/api/feedback/create", body: `{"message":"Pay?"}`, headers: bearer(mint(t, "alice"))})
	if w.Code != http.StatusCreated || strings.Contains(w.Body.String(), "feedbackUrl") || strings.Contains(w.Body.String(), "#t=") {
		t.Fatalf("create with the link withheld: %d %s", w.Code, w.Body)
	}
}

// TestDuplicateAuthorization: two Authorization headers are refused with
// 400, never resolved to the first.
func TestDuplicateAuthorization(t *testing.T) {
	s := newService(t, store.NewMemory())
	req := httptest.NewRequest("POST", "https://fb.example/api/feedback/create", strings.NewReader(`{"message":"Q"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("Authorization", "Bearer "+mint(t, "alice"))
	req.Header.Add("Authorization", "Bearer "+mint(t, "mallory"))
	w := httptest.NewRecorder()
	s.Create(w, req)
	if w.Code != http.StatusBadRequest || errorCode(t, w) != "invalid_request" {
		t.Fatalf("two Authorization headers: %d %s", w.Code, w.Body)
	}
}

// TestStoreFull: a full memory store answers 503 store_full with a
// Retry-After, and a clear message.
func TestStoreFull(t *testing.T) {
	s := newService(t, store.NewMemoryWith(store.MemoryOptions{MaxSessions: 1}))
	alice := mint(t, "alice")
	create(t, s, alice, `{"message":"one"}`)
	w := s.do(t, s.Create, call{method: "POST", path: "/api/feedback/create", body: `{"message":"two"}`, headers: bearer(alice)})
	if w.Code != http.StatusServiceUnavailable || errorCode(t, w) != "store_full" || w.Header().Get("Retry-After") == "" {
		t.Fatalf("create in a full store: %d %s %v", w.Code, w.Body, w.Header())
	}
}
