package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// humanServer serves the person's routes and the submit endpoint the way
// the module's route table does, over a real loopback listener.
type humanServer struct {
	svc *Service
	hp  *Human
	srv *httptest.Server
	st  store.Store
}

func newHumanServer(t *testing.T, cfg HumanConfig) *humanServer {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return newHumanServerOn(t, cfg, st)
}

func newHumanServerOn(t *testing.T, cfg HumanConfig, st store.Store) *humanServer {
	t.Helper()
	svc := newService(t, st)
	hp, err := NewHuman(svc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/feedback/create", Methods(svc.Create, http.MethodPost))
	mux.Handle("/api/feedback/{id}/submit", hp.Protect(Methods(svc.Submit, http.MethodPost)))
	mux.Handle("/feedback/{id}", hp.Protect(Methods(hp.Page, http.MethodGet, http.MethodHead)))
	mux.Handle("/feedback/{id}/view", hp.Protect(Methods(hp.View, http.MethodPost)))
	mux.Handle("/feedback/{id}/submit", hp.Protect(Methods(hp.Submit, http.MethodPost)))
	mux.Handle("/feedback/{id}/quick", hp.Protect(Methods(hp.Quick, http.MethodPost)))
	mux.Handle(StaticPrefix+"{name}", Methods(hp.Static, http.MethodGet, http.MethodHead))
	mux.Handle("/ws/{id}", Methods(hp.WS, http.MethodGet))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hp.Stop(true)
		srv.Close()
	})
	return &humanServer{svc: svc, hp: hp, srv: srv, st: st}
}

func (s *humanServer) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return s.req(t, "GET", path, "", hdr...)
}

func (s *humanServer) req(t *testing.T, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const uuidUnknown = "123e4567-e89b-12d3-a456-426614174000"

func TestPageHeadersAndHostileInput(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	id, _ := create(t, s.svc, mint(t, "alice"), `{"message":"hi"}`)
	for _, c := range []struct {
		path, accept string
		status       int
		want         string
	}{
		{"/feedback/" + id, "", 200, `lang="en"`},
		{"/feedback/" + uuidUnknown, "", 200, `data-state="loading"`}, // same shell: no hint
		{"/feedback/" + id + "?lang=zh", "", 200, `lang="zh-CN"`},
		{"/feedback/" + id, "zh-CN,zh;q=0.9,en;q=0.5", 200, `lang="zh-CN"`},
		{"/feedback/" + id + "?lang=fr", "fr-FR", 200, `lang="en"`},
		{"/feedback/" + id + "?theme=dark", "", 200, `data-theme="dark"`},
		{"/feedback/" + id + "?theme=%22%3E%3Cscript%3E", "", 200, `<html lang="en">`},
		{"/feedback/" + id + "?lang=%22%3E%3Cscript%3Ex&theme=light&theme=dark", "", 200, `data-theme="light"`},
		{"/feedback/" + id + "?%zz=%%", "", 200, `lang="en"`},
		{"/feedback/not-a-uuid", "", 404, `data-state="notfound"`},
		{"/feedback/" + strings.ToUpper(id), "", 404, `data-state="notfound"`},
		{"/feedback/%3Cscript%3E", "", 404, `data-state="notfound"`},
		{"/feedback/..%2F..%2Fetc%2Fpasswd", "", 404, `data-state="notfound"`},
		{"/feedback/" + strings.Repeat("a", 8<<10), "", 404, `data-state="notfound"`},
		{"/feedback/%00", "", 404, `data-state="notfound"`},
	} {
		resp, body := s.get(t, c.path, "Accept-Language", c.accept)
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("GET %.60s: %d, want %d with %q", c.path, resp.StatusCode, c.status, c.want)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, "%3Cscript") {
			t.Errorf("GET %.60s reflected script", c.path)
		}
		for h, want := range map[string]string{
			"Content-Security-Policy": "script-src 'self'",
			"Referrer-Policy":         "no-referrer",
			"Permissions-Policy":      "camera=()",
			"Cache-Control":           "no-store",
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"X-Robots-Tag":            "noindex",
			"Content-Type":            "text/html; charset=utf-8",
		} {
			if !strings.Contains(resp.Header.Get(h), want) {
				t.Errorf("GET %.60s: %s = %q, want %q", c.path, h, resp.Header.Get(h), want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("CSP %q", csp)
		}
	}
	// Other methods on the page are 405, not a fall-through.
	if resp, _ := s.req(t, "POST", "/feedback/"+id, "x"); resp.StatusCode != 405 {
		t.Errorf("POST page: %d", resp.StatusCode)
	}
	if resp, body := s.req(t, "HEAD", "/feedback/"+id, ""); resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD page: %d %q", resp.StatusCode, body)
	}
}

func TestViewAndHostileInput(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	alice := mint(t, "alice")
	id, tok := create(t, s.svc, alice, `{"message":"**Deploy?** <script>alert(1)</script> [x](javascript:alert(1))","predefinedOptions":["<img src=x onerror=alert(1)>","no"],"metadata":{"b":"\u202eevil","a":{"n":1}}}`)
	id2, tok2 := create(t, s.svc, alice, `{"message":"other"}`)

	resp, body := s.view(t, "/feedback/"+id+"/view", tok)
	if resp.StatusCode != 200 {
		t.Fatalf("view: %d %s", resp.StatusCode, body)
	}
	var v PageView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if v.SessionID != id || v.Status != store.StatusPending || len(v.Options) != 2 || v.Options[0] != "<img src=x onerror=alert(1)>" {
		t.Fatalf("view %+v", v)
	}
	if !strings.Contains(v.MessageHTML, "<strong>Deploy?</strong>") || strings.Contains(v.MessageHTML, "<script") || strings.Contains(v.MessageHTML, "javascript:") {
		t.Fatalf("messageHtml %q", v.MessageHTML)
	}
	if len(v.Metadata) != 2 || v.Metadata[0] != (MetaEntry{"a", `{"n":1}`}) || v.Metadata[1] != (MetaEntry{"b", "⟨U+202E⟩evil"}) {
		t.Fatalf("metadata %+v", v.Metadata)
	}
	if strings.Contains(body, "tokenHash") || strings.Contains(body, "alice") {
		t.Fatalf("view leaks owner or token hash: %s", body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("view headers %v", resp.Header)
	}

	// Every way of not holding the link gets the same 404 body.
	_, want := s.view(t, "/feedback/"+uuidUnknown+"/view", tok)
	for name, c := range map[string]struct{ path, tok string }{
		"no token":            {"/feedback/" + id + "/view", ""},
		"wrong token":         {"/feedback/" + id + "/view", "AAAAAAAAAAAAAAAAAAAAAAAAAA"},
		"other session token": {"/feedback/" + id + "/view", tok2},
		"token of other id":   {"/feedback/" + id2 + "/view", tok},
		"huge token":          {"/feedback/" + id + "/view", strings.Repeat("A", 8000)},
		"token plus suffix":   {"/feedback/" + id + "/view", tok + "A"},
		"malformed id":        {"/feedback/xyz/view", tok},
		"uppercase id":        {"/feedback/" + strings.ToUpper(id) + "/view", tok},
	} {
		resp, body := s.view(t, c.path, c.tok)
		if resp.StatusCode != 404 || body != want {
			t.Errorf("%s: %d %s, want the 404 %s", name, resp.StatusCode, body, want)
		}
	}
	// The token is taken from the body only.
	for name, c := range map[string]struct {
		method, path, body string
		hdr                []string
		status             int
		want               string
	}{
		"token in the query":   {"POST", "/feedback/" + id + "/view?t=" + tok, `{}`, nil, 404, "not_found"},
		"token in a header":    {"POST", "/feedback/" + id + "/view", `{}`, []string{"X-Feedback-Token", tok}, 404, "not_found"},
		"GET":                  {"GET", "/feedback/" + id + "/view", "", nil, 405, "method_not_allowed"},
		"not JSON":             {"POST", "/feedback/" + id + "/view", tok, nil, 400, "invalid_request"},
		"text/plain":           {"POST", "/feedback/" + id + "/view", `{"token":"` + tok + `"}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		"unknown member":       {"POST", "/feedback/" + id + "/view", `{"token":"` + tok + `","admin":true}`, nil, 400, "invalid_request"},
		"two objects":          {"POST", "/feedback/" + id + "/view", `{"token":"` + tok + `"}{}`, nil, 400, "invalid_request"},
		"token not a string":   {"POST", "/feedback/" + id + "/view", `{"token":123}`, nil, 400, "invalid_request"},
		"answer on the view":   {"POST", "/feedback/" + id + "/view", `{"token":"` + tok + `","answer":{}}`, nil, 400, "invalid_request"},
		"huge body":            {"POST", "/feedback/" + id + "/view", `{"token":"` + strings.Repeat("A", 70<<10) + `"}`, nil, 413, "body_too_large"},
		"array":                {"POST", "/feedback/" + id + "/view", `[]`, nil, 400, "invalid_request"},
		"deep nesting":         {"POST", "/feedback/" + id + "/view", `{"answer":` + strings.Repeat("[", 20000) + `}`, nil, 400, "invalid_request"},
		"invalid UTF-8 token":  {"POST", "/feedback/" + id + "/view", "{\"token\":\"\xff\xfe\"}", nil, 404, "not_found"},
		"cross-site view post": {"POST", "/feedback/" + id + "/view", `{"token":"` + tok + `"}`, []string{"Sec-Fetch-Site", "cross-site"}, 403, "cross_origin_request"},
	} {
		hdr := append([]string{"Content-Type", "application/json"}, c.hdr...)
		resp, body := s.req(t, c.method, c.path, c.body, hdr...)
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %.200s, want %d %s", name, resp.StatusCode, body, c.status, c.want)
		}
	}
}

func (s *humanServer) view(t *testing.T, path, tok string) (*http.Response, string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"token": tok})
	return s.req(t, "POST", path, string(b), "Content-Type", "application/json")
}

func (s *humanServer) pageSubmit(t *testing.T, id, tok, answer string, hdr ...string) (*http.Response, string) {
	t.Helper()
	tb, _ := json.Marshal(tok)
	body := `{"token":` + string(tb) + `,"answer":` + answer + `}`
	return s.req(t, "POST", "/feedback/"+id+"/submit", body, append([]string{"Content-Type", "application/json"}, hdr...)...)
}

func TestPageSubmit(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	alice := mint(t, "alice")
	id, tok := create(t, s.svc, alice, `{"message":"pick","predefinedOptions":["a","b"],"allowFreeText":false}`)
	other, otherTok := create(t, s.svc, alice, `{"message":"other"}`)
	for _, c := range []struct {
		name, id, tok, answer string
		status                int
		want                  string
	}{
		{"wrong token", id, otherTok, `{"selectedOptions":["a"]}`, 404, "not_found"},
		{"no token", id, "", `{"selectedOptions":["a"]}`, 404, "not_found"},
		{"token of another session", other, tok, `{"freeText":"x"}`, 404, "not_found"},
		{"malformed id", "x", tok, `{"selectedOptions":["a"]}`, 404, "not_found"},
		{"answer missing", id, tok, `null`, 400, "answer"},
		{"answer not an object", id, tok, `"a"`, 400, "invalid_request"},
		{"unknown answer field", id, tok, `{"selectedOptions":["a"],"isAdmin":true}`, 400, "isAdmin"},
		{"option not offered", id, tok, `{"selectedOptions":["<script>"]}`, 400, "not one of the offered options"},
		{"two options single select", id, tok, `{"selectedOptions":["a","b"]}`, 400, "only one option"},
		{"free text not allowed", id, tok, `{"freeText":"hi"}`, 400, "does not take free text"},
		{"nothing chosen", id, tok, `{"selectedOptions":[]}`, 400, "select an option"},
		{"control character", id, tok, `{"selectedOptions":["a"],"nonce":"a\u0000b"}`, 400, "nonce"},
	} {
		resp, body := s.pageSubmit(t, c.id, c.tok, c.answer)
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, resp.StatusCode, body, c.status, c.want)
		}
	}
	// A double click: the same nonce gets the same success; another answer
	// afterwards is a conflict; the REST submit agrees.
	resp, first := s.pageSubmit(t, id, tok, `{"selectedOptions":["b"],"nonce":"page-1"}`, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != 200 || !strings.Contains(first, `"submitted"`) {
		t.Fatalf("submit: %d %s", resp.StatusCode, first)
	}
	if resp, again := s.pageSubmit(t, id, tok, `{"selectedOptions":["b"],"nonce":"page-1"}`); resp.StatusCode != 200 || again != first {
		t.Fatalf("same nonce again: %d %s, want %s", resp.StatusCode, again, first)
	}
	if resp, body := s.pageSubmit(t, id, tok, `{"selectedOptions":["a"],"nonce":"page-2"}`); resp.StatusCode != 409 {
		t.Fatalf("second answer: %d %s", resp.StatusCode, body)
	}
	if resp, body := s.req(t, "POST", "/api/feedback/"+id+"/submit", `{"selectedOptions":["b"],"nonce":"page-1"}`,
		"Content-Type", "application/json", "X-Feedback-Token", tok); resp.StatusCode != 200 || body != first {
		t.Fatalf("REST retry with the page's nonce: %d %s", resp.StatusCode, body)
	}
	sess, err := s.st.Get(t.Context(), id)
	if err != nil || sess.Result == nil || len(sess.Result.SelectedOptions) != 1 || sess.Result.SelectedOptions[0] != "b" {
		t.Fatalf("stored %+v, %v", sess, err)
	}
	// Cross-site posts never reach the store.
	id3, tok3 := create(t, s.svc, alice, `{"message":"x"}`)
	if resp, body := s.pageSubmit(t, id3, tok3, `{"freeText":"csrf"}`, "Sec-Fetch-Site", "cross-site"); resp.StatusCode != 403 {
		t.Fatalf("cross-site page submit: %d %s", resp.StatusCode, body)
	}
	if sess, _ := s.st.Get(t.Context(), id3); sess.Status != store.StatusPending {
		t.Fatalf("cross-site submit changed the session: %s", sess.Status)
	}
}

func TestStatic(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	for _, c := range []struct {
		name   string
		status int
		ctype  string
	}{
		{"page.js", 200, "text/javascript"},
		{"page.css", 200, "text/css"},
		{"nope.js", 404, "application/json"},
		{"..%2Fpage.html", 404, "application/json"},
		{"%2e%2e%2fui.go", 404, "application/json"},
	} {
		resp, _ := s.get(t, StaticPrefix+c.name)
		if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %q", c.name, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	resp, _ := s.get(t, StaticPrefix+"page.js")
	if resp, _ := s.get(t, StaticPrefix+"page.js", "If-None-Match", resp.Header.Get("ETag")); resp.StatusCode != 304 {
		t.Errorf("conditional GET: %d", resp.StatusCode)
	}
}

func TestCrossSiteSubmitRefused(t *testing.T) {
	s := newHumanServer(t, HumanConfig{AllowedOrigins: []string{"https://app.example.com"}})
	id, tok := create(t, s.svc, mint(t, "alice"), `{"message":"hi","predefinedOptions":["a","b"]}`)
	body := `{"selectedOptions":["a"],"nonce":"n1"}`
	for _, c := range []struct {
		name   string
		hdr    []string
		status int
	}{
		{"cross-site fetch metadata", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"same-site other subdomain", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"foreign Origin only", []string{"Origin", "https://evil.example"}, 403},
		{"allowed origin", []string{"Origin", "https://app.example.com", "Sec-Fetch-Site", "cross-site"}, 200},
		{"same-origin page", []string{"Sec-Fetch-Site", "same-origin"}, 200},
		{"no browser headers (agent)", nil, 200},
	} {
		hdr := append([]string{"Content-Type", "application/json", "X-Feedback-Token", tok}, c.hdr...)
		resp, got := s.req(t, "POST", "/api/feedback/"+id+"/submit", body, hdr...)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, got, c.status)
		}
		if c.status == 403 && !strings.Contains(got, "cross_origin_request") {
			t.Errorf("%s: 403 without a clear error: %s", c.name, got)
		}
	}
}

func TestCanonicalOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://App.Example.com":  "https://app.example.com",
		"http://localhost:8080":    "http://localhost:8080",
		"https://app.example.com/": "https://app.example.com",
		"app.example.com":          "",
		"https://*.example.com":    "",
		"ftp://x":                  "",
		"https://x/path":           "",
		"https://u:p@x":            "",
		"https://x?q":              "",
		"":                         "",
	} {
		got, err := CanonicalOrigin(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("CanonicalOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// --- WebSocket ---

func (s *humanServer) wsURL(id, query string) string {
	return "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/ws/" + id + query
}

func dial(t *testing.T, url string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func sendToken(t *testing.T, c *websocket.Conn, tok string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	b, _ := json.Marshal(map[string]any{"type": "authenticate", "data": map[string]string{"token": tok}})
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

type wsMsg struct {
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Timestamp time.Time       `json:"timestamp"`
}

// next reads one message; a close is returned as its status code.
func next(t *testing.T, c *websocket.Conn) (wsMsg, websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		code := websocket.CloseStatus(err)
		if code == -1 {
			t.Fatalf("read: %v (no close frame)", err)
		}
		return wsMsg{}, code
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	if m.Timestamp.IsZero() {
		t.Fatalf("message without timestamp: %s", b)
	}
	return m, 0
}

func expectType(t *testing.T, c *websocket.Conn, typ string) map[string]any {
	t.Helper()
	m, code := next(t, c)
	if code != 0 || m.Type != typ {
		t.Fatalf("got %q (close %d), want %s", m.Type, code, typ)
	}
	var d map[string]any
	if err := json.Unmarshal(m.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func expectClose(t *testing.T, c *websocket.Conn, want websocket.StatusCode) {
	t.Helper()
	m, code := next(t, c)
	if code != want {
		t.Fatalf("got message %q / close %d, want close %d", m.Type, code, want)
	}
}

// waitGoroutines waits (bounded) until the goroutine count is back to at
// most base: every socket's goroutines end with the socket.
func (s *humanServer) waitGoroutines(t *testing.T, base int) {
	t.Helper()
	// Idle keep-alive connections of plain requests are not sockets' work.
	s.srv.Client().CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want <= %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWSMessagesInOrderManyWatchers(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	alice := mint(t, "alice")
	id, tok := create(t, s.svc, alice, `{"message":"go?","predefinedOptions":["yes","no"]}`)
	base := runtime.NumGoroutine()

	var conns []*websocket.Conn
	for i := range 4 {
		var c *websocket.Conn
		var err error
		if i == 3 {
			// The owner, with its JWT on the handshake and no token message.
			c, _, err = dial(t, s.wsURL(id, "?clientType=app"), http.Header{"Authorization": {"Bearer " + alice}})
		} else {
			c, _, err = dial(t, s.wsURL(id, ""), nil)
			if err == nil {
				sendToken(t, c, tok)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		d := expectType(t, c, MsgConnectionEstablished)
		wantType := "web"
		if i == 3 {
			wantType = "app"
		}
		if d["sessionId"] != id || d["status"] != "pending" || d["clientType"] != wantType {
			t.Fatalf("connection_established %v", d)
		}
		conns = append(conns, c)
	}
	if n := s.hp.OpenSockets(); n != 4 {
		t.Fatalf("%d open sockets, want 4", n)
	}
	resp, body := s.req(t, "POST", "/api/feedback/"+id+"/submit", `{"selectedOptions":["yes"],"freeText":"ship it"}`,
		"Content-Type", "application/json", "X-Feedback-Token", tok)
	if resp.StatusCode != 200 {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	for _, c := range conns {
		d := expectType(t, c, MsgSessionStatusChanged)
		if d["status"] != "submitted" || d["previousStatus"] != "pending" || d["sessionId"] != id {
			t.Fatalf("session_status_changed %v", d)
		}
		d = expectType(t, c, MsgFeedbackSubmitted)
		res, _ := d["result"].(map[string]any)
		if d["sessionId"] != id || res["freeText"] != "ship it" {
			t.Fatalf("feedback_submitted %v", d)
		}
		expectClose(t, c, websocket.StatusNormalClosure)
	}
	s.waitGoroutines(t, base)

	// A watcher that arrives after the answer gets the state and a close.
	c, _, err := dial(t, s.wsURL(id, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	sendToken(t, c, tok)
	if d := expectType(t, c, MsgConnectionEstablished); d["status"] != "submitted" || d["result"] == nil {
		t.Fatalf("late connection_established %v", d)
	}
	expectClose(t, c, websocket.StatusNormalClosure)
}

func TestWSCancelAndExpiry(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	alice := mint(t, "alice")
	id, tok := create(t, s.svc, alice, `{"message":"cancel me"}`)
	c, _, err := dial(t, s.wsURL(id, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	sendToken(t, c, tok)
	expectType(t, c, MsgConnectionEstablished)
	if _, err := s.st.Cancel(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if d := expectType(t, c, MsgSessionStatusChanged); d["status"] != "cancelled" || d["previousStatus"] != "pending" {
		t.Fatalf("cancel event %v", d)
	}
	expectClose(t, c, websocket.StatusNormalClosure)

	// Expiry is data: nothing writes when the deadline passes, so the
	// watcher must wake up by itself and ask the store.
	now := time.Now().UTC()
	sess := &store.Session{
		ID: "00000000-0000-4000-8000-000000000001", Owner: store.Owner{Subject: "alice"}, Message: "soon gone",
		PredefinedOptions: []string{}, AllowFreeText: true, CreatedAt: now, UpdatedAt: now,
		ExpiresAt: now.Add(300 * time.Millisecond), Status: store.StatusPending, TokenHash: store.HashToken("tok-expiry"),
	}
	if err := s.st.Create(t.Context(), sess, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, _, err = dial(t, s.wsURL(sess.ID, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	sendToken(t, c, "tok-expiry")
	expectType(t, c, MsgConnectionEstablished)
	if d := expectType(t, c, MsgSessionStatusChanged); d["status"] != "expired" || d["previousStatus"] != "pending" {
		t.Fatalf("expiry event %v", d)
	}
	expectClose(t, c, websocket.StatusNormalClosure)
}

func TestWSRefusals(t *testing.T) {
	s := newHumanServer(t, HumanConfig{AuthTimeout: 200 * time.Millisecond, AllowedOrigins: []string{"https://app.example.com"}})
	alice, bob := mint(t, "alice"), mint(t, "bob")
	id, tok := create(t, s.svc, alice, `{"message":"who?"}`)
	base := runtime.NumGoroutine()

	// Refused before the upgrade, with an HTTP status and a clear error.
	for _, c := range []struct {
		name, path string
		hdr        http.Header
		status     int
		want       string
	}{
		{"apiKey in URL", "/ws/" + id + "?apiKey=secret", nil, 400, "credentials in the URL"},
		{"token in URL", "/ws/" + id + "?token=" + tok, nil, 400, "credentials in the URL"},
		{"bad clientType", "/ws/" + id + "?clientType=%3Cscript%3E", nil, 400, "clientType must be web or app"},
		{"malformed id", "/ws/not-a-uuid", nil, 404, "not_found"},
		{"bad JWT", "/ws/" + id, http.Header{"Authorization": {"Bearer nope"}}, 401, "unauthorized"},
		{"someone else's session", "/ws/" + id, http.Header{"Authorization": {"Bearer " + bob}}, 404, "not_found"},
		{"foreign Origin", "/ws/" + id, http.Header{"Origin": {"https://evil.example"}}, 403, "origin_not_allowed"},
		// The site's own host over the other scheme is another origin.
		{"own host, other scheme", "/ws/" + id, http.Header{"Origin": {"https://" + strings.TrimPrefix(s.srv.URL, "http://")}}, 403, "origin_not_allowed"},
		{"null Origin", "/ws/" + id, http.Header{"Origin": {"null"}}, 403, ""},
	} {
		_, resp, err := dial(t, "ws"+strings.TrimPrefix(s.srv.URL, "http")+c.path, c.hdr)
		if err == nil || resp == nil || resp.StatusCode != c.status {
			t.Errorf("%s: err %v, response %v; want HTTP %d", c.name, err, resp, c.status)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), c.want) {
			t.Errorf("%s: body %q lacks %q", c.name, b, c.want)
		}
	}
	// A plain GET is told it needs WebSocket.
	if resp, body := s.get(t, "/ws/"+id); resp.StatusCode != 426 || !strings.Contains(body, "WebSocket") {
		t.Errorf("plain GET: %d %s", resp.StatusCode, body)
	}
	// An allowed cross-origin page may connect.
	if c, _, err := dial(t, s.wsURL(id, ""), http.Header{"Origin": {"https://app.example.com"}}); err != nil {
		t.Errorf("allowed origin refused: %v", err)
	} else {
		sendToken(t, c, tok)
		expectType(t, c, MsgConnectionEstablished)
		c.Close(websocket.StatusNormalClosure, "")
	}

	// An unknown session is refused before the upgrade, holding no slot.
	if _, resp, err := dial(t, s.wsURL(uuidUnknown, ""), nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown session: %v %v, want 404 before the upgrade", err, resp)
	}

	// Refused after the upgrade with a close code.
	for _, c := range []struct {
		name string
		id   string
		send func(c *websocket.Conn)
		want websocket.StatusCode
	}{
		{"wrong token", id, func(c *websocket.Conn) { sendToken(t, c, "AAAAAAAAAAAAAAAAAAAAAAAAAA") }, websocket.StatusPolicyViolation},
		{"no token in time", id, func(*websocket.Conn) {}, websocket.StatusPolicyViolation},
		{"not JSON", id, func(c *websocket.Conn) { _ = c.Write(t.Context(), websocket.MessageText, []byte(tok)) }, websocket.StatusPolicyViolation},
		{"wrong type", id, func(c *websocket.Conn) {
			_ = c.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","data":{"token":"`+tok+`"}}`))
		}, websocket.StatusPolicyViolation},
		{"binary", id, func(c *websocket.Conn) { _ = c.Write(t.Context(), websocket.MessageBinary, []byte(tok)) }, websocket.StatusPolicyViolation},
		{"oversized frame", id, func(c *websocket.Conn) {
			_ = c.Write(t.Context(), websocket.MessageText, []byte(strings.Repeat("x", 64<<10)))
		}, websocket.StatusMessageTooBig},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, _, err := dial(t, s.wsURL(c.id, ""), nil)
			if err != nil {
				t.Fatal(err)
			}
			c.send(conn)
			expectClose(t, conn, c.want)
		})
	}
	// An oversized frame after authentication closes the socket too.
	conn, _, err := dial(t, s.wsURL(id, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	sendToken(t, conn, tok)
	expectType(t, conn, MsgConnectionEstablished)
	_ = conn.Write(t.Context(), websocket.MessageText, []byte(strings.Repeat("x", 64<<10)))
	expectClose(t, conn, websocket.StatusMessageTooBig)
	s.waitGoroutines(t, base)
}

func TestWSCaps(t *testing.T) {
	s := newHumanServer(t, HumanConfig{MaxSocketsPerSession: 2, MaxSocketsPerSubject: 3})
	alice := mint(t, "alice")
	id, tok := create(t, s.svc, alice, `{"message":"one"}`)
	id2, _ := create(t, s.svc, alice, `{"message":"two"}`)
	id3, _ := create(t, s.svc, alice, `{"message":"three"}`)
	owner := http.Header{"Authorization": {"Bearer " + alice}}

	open := func(id string, hdr http.Header) *websocket.Conn {
		c, _, err := dial(t, s.wsURL(id, ""), hdr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr == nil {
			sendToken(t, c, tok)
		}
		expectType(t, c, MsgConnectionEstablished)
		return c
	}
	a := open(id, nil)
	open(id, owner)
	// Third on the session: a browser is told after its token (1013)…
	c, _, err := dial(t, s.wsURL(id, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	sendToken(t, c, tok)
	expectClose(t, c, websocket.StatusTryAgainLater)
	// …an owner before the upgrade (429).
	if _, resp, err := dial(t, s.wsURL(id, ""), owner); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("owner over the session cap: %v %v", err, resp)
	}
	// The subject cap counts across sessions.
	open(id2, owner)
	open(id3, owner)
	if _, resp, err := dial(t, s.wsURL(id3, ""), owner); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("owner over the subject cap: %v %v", err, resp)
	} else if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "subject") {
		t.Fatalf("subject cap error %s", b)
	}
	// A closed socket frees its place.
	a.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for s.hp.OpenSockets() != 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	open(id, nil)
}

func TestWSStopClosesSockets(t *testing.T) {
	for _, c := range []struct {
		exiting bool
		want    websocket.StatusCode
	}{{false, websocket.StatusServiceRestart}, {true, websocket.StatusGoingAway}} {
		s := newHumanServer(t, HumanConfig{})
		id, tok := create(t, s.svc, mint(t, "alice"), `{"message":"reload"}`)
		var conns []*websocket.Conn
		for range 3 {
			conn, _, err := dial(t, s.wsURL(id, ""), nil)
			if err != nil {
				t.Fatal(err)
			}
			sendToken(t, conn, tok)
			expectType(t, conn, MsgConnectionEstablished)
			conns = append(conns, conn)
		}
		// Clients read while the server stops, as browsers do, so the
		// close handshakes complete.
		codes := make(chan websocket.StatusCode, len(conns))
		for _, conn := range conns {
			go func() {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				_, _, err := conn.Read(ctx)
				codes <- websocket.CloseStatus(err)
			}()
		}
		s.hp.Stop(c.exiting)
		for range conns {
			if code := <-codes; code != c.want {
				t.Fatalf("close code %d, want %d", code, c.want)
			}
		}
		// A stopped configuration takes no new sockets.
		if _, resp, err := dial(t, s.wsURL(id, ""), nil); err == nil || resp == nil || resp.StatusCode != 503 {
			t.Fatalf("connect after Stop: %v %v", err, resp)
		}
	}
}

func TestWSStoreDown(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	id, tok := create(t, s.svc, mint(t, "alice"), `{"message":"x"}`)
	c, _, err := dial(t, s.wsURL(id, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Closing the store ends every watch: the socket asks the client to
	// reconnect (to the configuration that has a store).
	sendToken(t, c, tok)
	expectType(t, c, MsgConnectionEstablished)
	if err := s.st.Close(); err != nil {
		t.Fatal(err)
	}
	m, code := next(t, c)
	if code != websocket.StatusServiceRestart && code != websocket.StatusTryAgainLater {
		t.Fatalf("after store close: %q / %d", m.Type, code)
	}
	if _, err := s.st.Get(t.Context(), id); !errors.Is(err, store.ErrUnavailable) && err == nil {
		t.Fatalf("closed store still answers")
	}
}

// TestWSPing: an idle watcher is pinged; a client that answers stays
// connected and still gets its events.
func TestWSPing(t *testing.T) {
	s := newHumanServer(t, HumanConfig{PingInterval: 20 * time.Millisecond})
	id, tok := create(t, s.svc, mint(t, "alice"), `{"message":"ping?"}`)
	pings := make(chan struct{}, 100)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, s.wsURL(id, ""), &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool {
			select {
			case pings <- struct{}{}:
			default:
			}
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	sendToken(t, c, tok)
	expectType(t, c, MsgConnectionEstablished)
	// Pings are answered by the client's reader: read until three arrived.
	readDone := make(chan wsMsg, 1)
	go func() {
		_, b, err := c.Read(ctx)
		var m wsMsg
		if err == nil {
			_ = json.Unmarshal(b, &m)
		}
		readDone <- m
	}()
	for range 3 {
		select {
		case <-pings:
		case <-ctx.Done():
			t.Fatal("no pings from the server")
		}
	}
	if resp, body := s.pageSubmit(t, id, tok, `{"freeText":"pong"}`); resp.StatusCode != 200 {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	if m := <-readDone; m.Type != MsgSessionStatusChanged {
		t.Fatalf("after pings got %+v", m)
	}
}

// flakyStore fails the next Get calls on request and lets a test wake the
// watchers of a session without changing it.
type flakyStore struct {
	store.Store
	failGets atomic.Int32
	poke     chan struct{}
}

func (f *flakyStore) Get(ctx context.Context, id string) (*store.Session, error) {
	if f.failGets.Add(-1) >= 0 {
		return nil, fmt.Errorf("injected: %w", store.ErrUnavailable)
	}
	return f.Store.Get(ctx, id)
}

func (f *flakyStore) Watch(ctx context.Context, id string) <-chan struct{} {
	in := f.Store.Watch(ctx, id)
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		for {
			select {
			case _, ok := <-in:
				if !ok {
					return
				}
			case <-f.poke:
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out
}

// TestWSExpiryAfterStoreError: a failed re-read must not make the watcher
// forget the deadline; the expiry still arrives.
func TestWSExpiryAfterStoreError(t *testing.T) {
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	st := &flakyStore{Store: mem, poke: make(chan struct{}, 1)}
	s := newHumanServerOn(t, HumanConfig{}, st)
	now := time.Now().UTC()
	sess := &store.Session{
		ID: "00000000-0000-4000-8000-000000000002", Owner: store.Owner{Subject: "alice"}, Message: "later",
		PredefinedOptions: []string{}, AllowFreeText: true, CreatedAt: now, UpdatedAt: now,
		ExpiresAt: now.Add(2500 * time.Millisecond), Status: store.StatusPending, TokenHash: store.HashToken("tok-flaky"),
	}
	if err := mem.Create(t.Context(), sess, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, _, err := dial(t, s.wsURL(sess.ID, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	sendToken(t, c, "tok-flaky")
	expectType(t, c, MsgConnectionEstablished)
	// The watcher wakes, its re-read fails (it retries in 1 s, before the
	// deadline, and finds the session still pending)…
	st.failGets.Store(1)
	st.poke <- struct{}{}
	// …and it must still wake at the deadline.
	if d := expectType(t, c, MsgSessionStatusChanged); d["status"] != "expired" {
		t.Fatalf("event %v", d)
	}
	expectClose(t, c, websocket.StatusNormalClosure)
}

// TestSlowBodyIsCut: a client that sends its headers and then trickles (or
// holds back) the body of an unauthenticated page POST does not hold the
// handler: the read gives up after bodyReadTimeout and the request ends.
func TestSlowBodyIsCut(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /feedback/%s/view HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tok", uuidUnknown)
	// Nothing more is sent. The server must end the request by itself
	// (bounded here well above bodyReadTimeout, so only a hang fails).
	if err := conn.SetReadDeadline(time.Now().Add(bodyReadTimeout + 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still held the request after %v", time.Since(start))
	}
	if len(b) > 0 && !strings.Contains(string(b), "400") {
		t.Fatalf("answer to a cut body: %.200q", b)
	}
}
