package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// cookieLogin stands in for an identity.Login (the real ones, `login caddy`
// and `login oidc`, live in package login and are tested there and in
// e2e): the person is whoever the "person" cookie names.
type cookieLogin struct{}

func (cookieLogin) Person(r *http.Request) (identity.Person, error) {
	c, err := r.Cookie("person")
	if err != nil || c.Value == "" {
		return identity.Person{}, identity.ErrNotSignedIn
	}
	return identity.Person{ID: c.Value, Name: strings.ToUpper(c.Value)}, nil
}

func (cookieLogin) SignIn(w http.ResponseWriter, r *http.Request, back string) {
	w.Header().Set("X-Sign-In-Back", back)
	http.Error(w, "sign in first", http.StatusUnauthorized)
}
func (cookieLogin) Routes() map[string]http.Handler { return nil }
func (cookieLogin) Close(context.Context) error     { return nil }

type env struct {
	t   *testing.T
	srv *Server
	ts  *httptest.Server
	kv  store.KV
	// client does not follow redirects: the tests read Location.
	client *http.Client
}

func newEnv(t *testing.T, tweak ...func(*Config)) *env {
	t.Helper()
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux) // binds 127.0.0.1
	t.Cleanup(ts.Close)
	kv := store.NewMemory()
	t.Cleanup(func() { kv.Close() })
	cfg := Config{Issuer: ts.URL, Login: cookieLogin{}, KV: kv, StaticBase: "/feedback-static/"}
	for _, f := range tweak {
		f(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for p, h := range srv.Routes() {
		mux.Handle(p, h)
	}
	return &env{t: t, srv: srv, ts: ts, kv: kv, client: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(req *http.Request) resp {
	e.t.Helper()
	r, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode >= 500 {
		e.t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, r.StatusCode, b)
	}
	return resp{r.StatusCode, r.Header, string(b)}
}

func (e *env) get(path, person string) resp {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+path, nil)
	if person != "" {
		req.AddCookie(&http.Cookie{Name: "person", Value: person})
	}
	return e.do(req)
}

// post sends a form as a same-origin browser page or a client would.
func (e *env) post(path string, form url.Values, person string, hdr ...string) resp {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if person != "" {
		req.AddCookie(&http.Cookie{Name: "person", Value: person})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func (e *env) register(body string) (resp, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/oauth/register", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	r := e.do(req)
	var m map[string]any
	_ = json.Unmarshal([]byte(r.body), &m)
	return r, m
}

func (e *env) newClient(redirect string) string {
	e.t.Helper()
	r, m := e.register(`{"client_name":"Test App","redirect_uris":["` + redirect + `"]}`)
	if r.status != 201 {
		e.t.Fatalf("register: %d %s", r.status, r.body)
	}
	return m["client_id"].(string)
}

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk0123"

func challengeOf(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (e *env) authParams(clientID, redirect string) url.Values {
	return url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect},
		"code_challenge": {challengeOf(verifier)}, "code_challenge_method": {"S256"},
		"state": {"st-123"}, "resource": {e.ts.URL + "/mcp"},
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

// approve runs authorize → consent → approve and returns the redirect.
func (e *env) approve(params url.Values, person string) *url.URL {
	e.t.Helper()
	r := e.get("/oauth/authorize?"+params.Encode(), person)
	if r.status == http.StatusFound {
		return location(e.t, r) // consent remembered
	}
	if r.status != 200 {
		e.t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	r = e.post("/oauth/authorize", url.Values{"csrf": {csrfOf(e.t, r.body)}, "decision": {"approve"}}, person,
		"Origin", e.ts.URL, "Sec-Fetch-Site", "same-origin")
	if r.status != http.StatusSeeOther {
		e.t.Fatalf("approve: %d %s", r.status, r.body)
	}
	return location(e.t, r)
}

func location(t *testing.T, r resp) *url.URL {
	t.Helper()
	u, err := url.Parse(r.header.Get("Location"))
	if err != nil || r.header.Get("Location") == "" {
		t.Fatalf("no Location (%d): %s", r.status, r.body)
	}
	return u
}

func (e *env) code(clientID, redirect, person string) string {
	e.t.Helper()
	u := e.approve(e.authParams(clientID, redirect), person)
	c := u.Query().Get("code")
	if c == "" {
		e.t.Fatalf("no code in %s", u)
	}
	return c
}

type tokens struct {
	Access  string `json:"access_token"`
	Refresh string `json:"refresh_token"`
	Scope   string `json:"scope"`
	Type    string `json:"token_type"`
	Expires int    `json:"expires_in"`
	Error   string `json:"error"`
	Desc    string `json:"error_description"`
}

func (e *env) token(form url.Values, hdr ...string) (resp, tokens) {
	e.t.Helper()
	r := e.post("/oauth/token", form, "", hdr...)
	var tk tokens
	if err := json.Unmarshal([]byte(r.body), &tk); err != nil {
		e.t.Fatalf("token: %d, body is not JSON: %s", r.status, r.body)
	}
	return r, tk
}

func (e *env) exchange(clientID, redirect, code string) (resp, tokens) {
	return e.token(url.Values{"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {code},
		"redirect_uri": {redirect}, "code_verifier": {verifier}})
}

func (e *env) check(tok string) string {
	_, aerr := e.srv.Check(context.Background(), tok)
	if aerr != nil {
		return aerr.Reason
	}
	return "ok"
}

const cb = "http://127.0.0.1:9/callback"

func TestMetadata(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/prefix"} {
		r := e.get(path, "")
		var md map[string]any
		if err := json.Unmarshal([]byte(r.body), &md); err != nil || r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		want := map[string]string{
			"issuer": `"` + e.ts.URL + `"`, "response_types_supported": `["code"]`,
			"code_challenge_methods_supported":               `["S256"]`,
			"client_id_metadata_document_supported":          "true",
			"authorization_response_iss_parameter_supported": "true",
			"registration_endpoint":                          `"` + e.ts.URL + `/oauth/register"`,
			"revocation_endpoint":                            `"` + e.ts.URL + `/oauth/revoke"`,
			"scopes_supported":                               `["feedback:create","feedback:read","feedback:answer"]`,
		}
		for k, v := range want {
			got, _ := json.Marshal(md[k])
			if string(got) != v {
				t.Errorf("%s: %s = %s, want %s", path, k, got, v)
			}
		}
		if m := md["token_endpoint_auth_methods_supported"].([]any); m[0] != "none" {
			t.Errorf("token_endpoint_auth_methods_supported = %v, want none first", m)
		}
	}
}

// TestFlow is the whole flow a client runs: register, sign in, consent,
// code, token, use, refresh, revoke.
func TestFlow(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	params := e.authParams(id, "http://127.0.0.1:41234/callback") // another loopback port: RFC 8252 §7.3

	r := e.get("/oauth/authorize?"+params.Encode(), "")
	if r.status != 401 || r.header.Get("X-Sign-In-Back") != "/oauth/authorize?"+params.Encode() {
		t.Fatalf("not signed in: want the login's SignIn with back = the authorize URL, got %d back=%q", r.status, r.header.Get("X-Sign-In-Back"))
	}
	r = e.get("/oauth/authorize?"+params.Encode()+"&lang=zh&theme=dark", "alice")
	for _, want := range []string{"Test App", "127.0.0.1:41234", "ALICE", "向你提问", `data-theme="dark"`, "/feedback-static/page.css"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "form-action 'self' http://127.0.0.1:41234") {
		t.Errorf("consent CSP = %q", csp)
	}
	r = e.post("/oauth/authorize", url.Values{"csrf": {csrfOf(t, r.body)}, "decision": {"approve"}}, "alice",
		"Origin", e.ts.URL, "Sec-Fetch-Site", "same-origin")
	u := location(t, r)
	if u.Host != "127.0.0.1:41234" || u.Query().Get("state") != "st-123" || u.Query().Get("iss") != e.ts.URL {
		t.Fatalf("redirect = %s: want the loopback port asked for, state and iss", u)
	}
	tr, tk := e.exchange(id, "http://127.0.0.1:41234/callback", u.Query().Get("code"))
	if tr.status != 200 || tk.Type != "Bearer" || tk.Scope != "feedback:create feedback:read" || !strings.HasPrefix(tk.Access, AccessPrefix) ||
		tr.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("token: %d %s", tr.status, tr.body)
	}
	claims, aerr := e.srv.Check(context.Background(), tk.Access)
	if aerr != nil || claims.Subject != "alice" || claims.Audience[0] != e.ts.URL+"/mcp" || claims.ClientID != id ||
		!claims.HasScope("feedback:create") || claims.HasScope("feedback:answer") || claims.Issuer != e.ts.URL {
		t.Fatalf("check: %+v %v", claims, aerr)
	}
	// The consent is remembered: the next authorization skips the page.
	u = e.approve(e.authParams(id, cb), "alice")
	if u.Query().Get("code") == "" {
		t.Fatalf("remembered consent: %s", u)
	}
	// Refresh rotates.
	rr, tk2 := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}})
	if rr.status != 200 || tk2.Refresh == tk.Refresh || tk2.Access == tk.Access {
		t.Fatalf("refresh: %d %s", rr.status, rr.body)
	}
	if e.check(tk2.Access) != "ok" || e.check(tk.Access) != "ok" {
		t.Fatal("both access tokens of a live grant must work")
	}
	// Revoking the refresh token ends the grant: every access token too.
	rv := e.post("/oauth/revoke", url.Values{"client_id": {id}, "token": {tk2.Refresh}}, "")
	if rv.status != 200 {
		t.Fatalf("revoke: %d %s", rv.status, rv.body)
	}
	if e.check(tk2.Access) != "revoked" || e.check(tk.Access) != "revoked" {
		t.Fatal("after revoke, the grant's access tokens must be refused")
	}
	// Revoking an unknown token is 200 too (RFC 7009 §2.2).
	if rv := e.post("/oauth/revoke", url.Values{"client_id": {id}, "token": {"nonsense"}}, ""); rv.status != 200 {
		t.Fatalf("revoke unknown: %d", rv.status)
	}
}

func TestConsentDenyAndRevoke(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	r := e.get("/oauth/authorize?"+e.authParams(id, cb).Encode(), "bob")
	r = e.post("/oauth/authorize", url.Values{"csrf": {csrfOf(t, r.body)}, "decision": {"deny"}}, "bob", "Sec-Fetch-Site", "same-origin")
	if u := location(t, r); u.Query().Get("error") != "access_denied" || u.Query().Get("iss") != e.ts.URL || u.Query().Get("state") != "st-123" {
		t.Fatalf("deny: %s", u)
	}
	_, tk := e.exchange(id, cb, e.code(id, cb, "bob"))
	// The consents page lists the client; revoking ends its grants.
	p := e.get("/oauth/consents", "bob")
	if !strings.Contains(p.body, "Test App") {
		t.Fatalf("consents page: %s", p.body)
	}
	p = e.post("/oauth/consents", url.Values{"csrf": {csrfOf(t, p.body)}, "client_id": {id}}, "bob", "Sec-Fetch-Site", "same-origin")
	if p.status != http.StatusSeeOther {
		t.Fatalf("revoke consent: %d %s", p.status, p.body)
	}
	if e.check(tk.Access) != "revoked" {
		t.Fatal("revoking the consent must end the client's tokens")
	}
	if r := e.get("/oauth/authorize?"+e.authParams(id, cb).Encode(), "bob"); r.status != 200 || !strings.Contains(r.body, `name="csrf"`) {
		t.Fatalf("after revoking, the consent page must show again: %d", r.status)
	}
}

// TestAuthorizeHostile: every bad authorization request either gets an
// error page (when the client or redirect URI cannot be trusted: never a
// redirect there) or an RFC 6749 §4.1.2.1 error redirect with iss.
func TestAuthorizeHostile(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	other := e.newClient("https://other.example/cb")
	cases := []struct {
		name   string
		change func(url.Values)
		page   string // error page containing this, or
		code   string // error redirect with this code
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "dcr_nope") }, "not registered", ""},
		{"missing client", func(v url.Values) { v.Del("client_id") }, "client_id is missing", ""},
		{"unregistered redirect", func(v url.Values) { v.Set("redirect_uri", "https://evil.example/cb") }, "not one this client registered", ""},
		{"redirect of another client", func(v url.Values) { v.Set("redirect_uri", "https://other.example/cb") }, "not one this client registered", ""},
		{"redirect path differs", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:9/callback/../x") }, "not one this client registered", ""},
		{"redirect case trick", func(v url.Values) { v.Set("redirect_uri", "HTTP://127.0.0.1:9/callback") }, "not one this client registered", ""},
		{"redirect localhost for 127.0.0.1", func(v url.Values) { v.Set("redirect_uri", "http://localhost:9/callback") }, "not one this client registered", ""},
		{"javascript redirect", func(v url.Values) { v.Set("redirect_uri", "javascript:alert(1)") }, "not one this client registered", ""},
		{"two redirect_uris", func(v url.Values) { v.Add("redirect_uri", cb) }, "more than once", ""},
		{"two client_ids", func(v url.Values) { v.Add("client_id", other) }, "more than once", ""},
		{"missing PKCE", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "", "invalid_request"},
		{"plain PKCE", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "", "invalid_request"},
		{"PKCE without method", func(v url.Values) { v.Del("code_challenge_method") }, "", "invalid_request"},
		{"short challenge", func(v url.Values) { v.Set("code_challenge", "abc") }, "", "invalid_request"},
		{"token response type", func(v url.Values) { v.Set("response_type", "token") }, "", "unsupported_response_type"},
		{"missing response type", func(v url.Values) { v.Del("response_type") }, "", "invalid_request"},
		{"resource of another server", func(v url.Values) { v.Set("resource", "https://other.example/mcp") }, "", "invalid_target"},
		{"resource prefix trick", func(v url.Values) { v.Set("resource", e.ts.URL+".evil.example/mcp") }, "", "invalid_target"},
		{"resource with fragment", func(v url.Values) { v.Set("resource", e.ts.URL+"/mcp#x") }, "", "invalid_target"},
		{"two resources", func(v url.Values) { v.Add("resource", e.ts.URL) }, "", "invalid_request"},
		{"unknown scope", func(v url.Values) { v.Set("scope", "feedback:create admin") }, "", "invalid_scope"},
		{"form_post mode", func(v url.Values) { v.Set("response_mode", "form_post") }, "", "invalid_request"},
		{"huge state", func(v url.Values) { v.Set("state", strings.Repeat("s", 2000)) }, "", "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := e.authParams(id, cb)
			c.change(v)
			r := e.get("/oauth/authorize?"+v.Encode(), "alice")
			if c.page != "" {
				if r.status != 400 || r.header.Get("Location") != "" || !strings.Contains(r.body, c.page) {
					t.Fatalf("want an error page saying %q and no redirect, got %d Location=%q %s", c.page, r.status, r.header.Get("Location"), r.body)
				}
				if !strings.Contains(r.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
					t.Error("error page without frame-ancestors 'none'")
				}
				return
			}
			u := location(t, r)
			q := u.Query()
			if r.status != 302 || u.Host != "127.0.0.1:9" || q.Get("error") != c.code || q.Get("error_description") == "" ||
				q.Get("iss") != e.ts.URL || q.Get("code") != "" {
				t.Fatalf("want redirect error %s with iss, got %d %s", c.code, r.status, u)
			}
			if v.Get("state") == "st-123" && len(v["state"]) == 1 && q.Get("state") != "st-123" {
				t.Errorf("state not echoed: %s", u)
			}
		})
	}
	// No state: allowed (PKCE protects the flow; the SDK sends none) and
	// none comes back.
	v := e.authParams(id, cb)
	v.Del("state")
	if u := e.approve(v, "alice"); u.Query().Get("code") == "" || u.Query().Has("state") {
		t.Fatalf("without state: %s", u)
	}
}

// TestTokenHostile: RFC 9700 §4 attacks on the token endpoint, each with
// its RFC 6749 §5.2 answer.
func TestTokenHostile(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	other := e.newClient(cb)
	base := func(code string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "client_id": {id}, "code": {code}, "redirect_uri": {cb}, "code_verifier": {verifier}}
	}
	cases := []struct {
		name   string
		change func(url.Values)
		status int
		code   string
	}{
		{"wrong verifier", func(v url.Values) { v.Set("code_verifier", strings.Repeat("a", 43)) }, 400, "invalid_grant"},
		{"missing verifier", func(v url.Values) { v.Del("code_verifier") }, 400, "invalid_request"},
		{"short verifier", func(v url.Values) { v.Set("code_verifier", "abc") }, 400, "invalid_request"},
		{"code of another client", func(v url.Values) { v.Set("client_id", other) }, 400, "invalid_grant"},
		{"other redirect_uri", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:9/other") }, 400, "invalid_grant"},
		{"missing redirect_uri", func(v url.Values) { v.Del("redirect_uri") }, 400, "invalid_grant"},
		{"other resource", func(v url.Values) { v.Set("resource", "https://other.example/") }, 400, "invalid_target"},
		{"unknown code", func(v url.Values) { v.Set("code", "nope") }, 400, "invalid_grant"},
		{"unknown client", func(v url.Values) { v.Set("client_id", "dcr_nope") }, 401, "invalid_client"},
		{"public client sends a secret", func(v url.Values) { v.Set("client_secret", "x") }, 401, "invalid_client"},
		{"password grant", func(v url.Values) { v.Set("grant_type", "password") }, 400, "unsupported_grant_type"},
		{"no grant type", func(v url.Values) { v.Del("grant_type") }, 400, "invalid_request"},
		{"repeated code", func(v url.Values) { v.Add("code", "x") }, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := base(e.code(id, cb, "alice"))
			c.change(v)
			r, tk := e.token(v)
			if r.status != c.status || tk.Error != c.code || tk.Desc == "" || tk.Access != "" {
				t.Fatalf("want %d %s, got %d %s", c.status, c.code, r.status, r.body)
			}
		})
	}
	t.Run("not form encoded", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.ts.URL+"/oauth/token", strings.NewReader(`{"grant_type":"authorization_code"}`))
		req.Header.Set("Content-Type", "application/json")
		if r := e.do(req); r.status != 400 || !strings.Contains(r.body, "x-www-form-urlencoded") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("huge body", func(t *testing.T) {
		r := e.post("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "x": {strings.Repeat("a", 1<<20)}}, "")
		if r.status != 400 || !strings.Contains(r.body, "invalid_request") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("GET", func(t *testing.T) {
		if r := e.get("/oauth/token", ""); r.status != 405 || r.header.Get("Allow") != "POST" {
			t.Fatalf("%d", r.status)
		}
	})
	t.Run("code reuse revokes the grant", func(t *testing.T) {
		code := e.code(id, cb, "alice")
		_, tk := e.exchange(id, cb, code)
		if e.check(tk.Access) != "ok" {
			t.Fatal("first exchange must work")
		}
		r, tk2 := e.exchange(id, cb, code)
		if r.status != 400 || tk2.Error != "invalid_grant" || !strings.Contains(tk2.Desc, "already used") {
			t.Fatalf("reuse: %d %s", r.status, r.body)
		}
		if e.check(tk.Access) != "revoked" {
			t.Fatal("a reused code must revoke the tokens issued for it")
		}
		if r, _ := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}}); r.status != 400 {
			t.Fatalf("refresh after code reuse: %d", r.status)
		}
	})
	t.Run("refresh reuse revokes the family", func(t *testing.T) {
		_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
		rf := func(rt string, cl string) (resp, tokens) {
			return e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {cl}, "refresh_token": {rt}})
		}
		_, tk2 := rf(tk.Refresh, id)
		if tk2.Access == "" {
			t.Fatal("first refresh must work")
		}
		r, bad := rf(tk.Refresh, id)
		if r.status != 400 || bad.Error != "invalid_grant" {
			t.Fatalf("reuse: %d %s", r.status, r.body)
		}
		if e.check(tk2.Access) != "revoked" {
			t.Fatal("reusing an old refresh token must revoke the newest access token")
		}
		if r, _ := rf(tk2.Refresh, id); r.status != 400 {
			t.Fatal("reusing an old refresh token must revoke the newest refresh token")
		}
	})
	t.Run("refresh by another client", func(t *testing.T) {
		_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
		r, bad := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {other}, "refresh_token": {tk.Refresh}})
		if r.status != 400 || bad.Error != "invalid_grant" || e.check(tk.Access) != "revoked" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("refresh widening scope", func(t *testing.T) {
		_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
		r, bad := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}, "scope": {"feedback:answer"}})
		if r.status != 400 || bad.Error != "invalid_scope" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		// A refused widening leaves the token usable.
		if r, _ := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}, "scope": {"feedback:read"}}); r.status != 200 {
			t.Fatalf("narrowing: %d %s", r.status, r.body)
		}
	})
	t.Run("refresh for another resource", func(t *testing.T) {
		_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
		r, bad := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}, "resource": {"https://other.example/"}})
		if r.status != 400 || bad.Error != "invalid_target" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestConfidentialClient(t *testing.T) {
	e := newEnv(t)
	r, m := e.register(`{"client_name":"Server App","redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}`)
	if r.status != 201 || m["client_secret"] == nil {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	id, sec := m["client_id"].(string), m["client_secret"].(string)
	code := e.code(id, "https://app.example/cb", "alice")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"}, "code_verifier": {verifier}}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(user)+":"+url.QueryEscape(pass)))
	}
	for _, c := range []struct{ name, auth string }{{"no secret", ""}, {"wrong secret", basic(id, "wrong")}} {
		f := url.Values{"client_id": {id}}
		for k, v := range form {
			f[k] = v
		}
		var hdr []string
		if c.auth != "" {
			f.Del("client_id")
			hdr = []string{"Authorization", c.auth}
		}
		if r, tk := e.token(f, hdr...); r.status != 401 || tk.Error != "invalid_client" {
			t.Fatalf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	// The failed attempts did not consume the code: client authentication
	// comes first.
	if r, tk := e.token(form, "Authorization", basic(id, sec)); r.status != 200 || tk.Access == "" {
		t.Fatalf("basic: %d %s", r.status, r.body)
	}
}

func TestRegisterHostile(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RegistrationsPerHour = 40 })
	cases := []struct{ name, body, code string }{
		{"no redirect", `{"client_name":"x"}`, "invalid_redirect_uri"},
		{"http to a host", `{"redirect_uris":["http://evil.example/cb"]}`, "invalid_redirect_uri"},
		{"javascript", `{"redirect_uris":["javascript:alert(1)"]}`, "invalid_redirect_uri"},
		{"data", `{"redirect_uris":["data:text/html,hi"]}`, "invalid_redirect_uri"},
		{"fragment", `{"redirect_uris":["https://a.example/cb#x"]}`, "invalid_redirect_uri"},
		{"userinfo", `{"redirect_uris":["https://u:p@a.example/cb"]}`, "invalid_redirect_uri"},
		{"relative", `{"redirect_uris":["/cb"]}`, "invalid_redirect_uri"},
		{"space", `{"redirect_uris":["https://a.example/c b"]}`, "invalid_redirect_uri"},
		{"eleven", `{"redirect_uris":[` + strings.Repeat(`"https://a.example/",`, 10) + `"https://a.example/"]}`, "invalid_redirect_uri"},
		{"private_key_jwt", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}`, "invalid_client_metadata"},
		{"implicit", `{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}`, "invalid_client_metadata"},
		{"token response", `{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}`, "invalid_client_metadata"},
		{"bidi name", `{"redirect_uris":["https://a.example/cb"],"client_name":"Good\u202eApp"}`, "invalid_client_metadata"},
		{"long name", `{"redirect_uris":["https://a.example/cb"],"client_name":"` + strings.Repeat("n", 101) + `"}`, "invalid_client_metadata"},
		{"bad scope", `{"redirect_uris":["https://a.example/cb"],"scope":"root"}`, "invalid_client_metadata"},
		{"not JSON", `redirect_uris=x`, "invalid_client_metadata"},
		{"wrong type", `{"redirect_uris":"https://a.example/cb"}`, "invalid_client_metadata"},
		{"huge", `{"client_name":"` + strings.Repeat("n", 20000) + `"}`, "invalid_client_metadata"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, m := e.register(c.body)
			if r.status < 400 || r.status >= 500 || m["error"] != c.code || m["error_description"] == "" {
				t.Fatalf("want %s, got %d %s", c.code, r.status, r.body)
			}
		})
	}
	t.Run("custom scheme and loopback are fine", func(t *testing.T) {
		if r, _ := e.register(`{"redirect_uris":["cursor://anysphere.cursor-mcp/oauth/callback","http://[::1]/cb","https://a.example/cb"]}`); r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestRegisterRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RegistrationsPerHour = 3 })
	for i := range 3 {
		if r, _ := e.register(`{"redirect_uris":["https://a.example/cb"]}`); r.status != 201 {
			t.Fatalf("registration %d: %d", i, r.status)
		}
	}
	r, m := e.register(`{"redirect_uris":["https://a.example/cb"]}`)
	if r.status != 429 || r.header.Get("Retry-After") == "" || m["error_description"] == "" {
		t.Fatalf("4th: %d %s", r.status, r.body)
	}
}

// TestRegisterRateLimitConcurrent: registrations racing from one address
// never get past the cap together.
// On redis-server too, where the count and the add are round trips apart.
func TestRegisterRateLimitConcurrent(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testRegisterRace(t, nil) })
	t.Run("redis", func(t *testing.T) {
		kv, err := store.NewRedis(store.RedisOptions{URL: redistest.Start(t).URL(), KeyPrefix: "oauthtest:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kv.Close() })
		testRegisterRace(t, kv)
	})
}

func testRegisterRace(t *testing.T, kv store.KV) {
	e := newEnv(t, func(c *Config) {
		c.RegistrationsPerHour = 3
		if kv != nil {
			c.KV = kv
		}
	})
	var wg sync.WaitGroup
	var created, refused atomic.Int32
	for range 24 {
		wg.Go(func() {
			switch r, _ := e.register(`{"redirect_uris":["https://a.example/cb"]}`); r.status {
			case 201:
				created.Add(1)
			case 429:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if created.Load() > 3 || created.Load()+refused.Load() != 24 {
		t.Fatalf("%d registrations created and %d refused of 24 with a cap of 3", created.Load(), refused.Load())
	}
}

// TestConsentCSRF: the decision needs the page's single-use token, the
// person the page was shown to, and a same-site request.
func TestConsentCSRF(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	page := func() string {
		return csrfOf(t, e.get("/oauth/authorize?"+e.authParams(id, cb).Encode(), "alice").body)
	}
	approve := url.Values{"decision": {"approve"}}
	cases := []struct {
		name   string
		csrf   string
		person string
		hdr    []string
		status int
		says   string
	}{
		{"cross-site POST", page(), "alice", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403, "another site"},
		{"cross-origin, no fetch metadata", page(), "alice", []string{"Origin", "https://evil.example"}, 403, "another site"},
		{"no token", "", "alice", []string{"Sec-Fetch-Site", "same-origin"}, 403, "security token"},
		{"made-up token", "AAAAAAAAAAAAAAAAAAAAAAAAAA", "alice", []string{"Sec-Fetch-Site", "same-origin"}, 400, "expired or was already used"},
		{"another person", page(), "mallory", []string{"Sec-Fetch-Site", "same-origin"}, 403, "not signed in as the person"},
		{"signed out", page(), "", []string{"Sec-Fetch-Site", "same-origin"}, 403, "not signed in as the person"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := url.Values{"csrf": {c.csrf}}
			for k, v := range approve {
				f[k] = v
			}
			r := e.post("/oauth/authorize", f, c.person, c.hdr...)
			if r.status != c.status || r.header.Get("Location") != "" || !strings.Contains(r.body, c.says) {
				t.Fatalf("want %d saying %q, got %d %s", c.status, c.says, r.status, r.body)
			}
		})
	}
	t.Run("token is single use", func(t *testing.T) {
		csrf := page()
		f := url.Values{"csrf": {csrf}, "decision": {"approve"}}
		if r := e.post("/oauth/authorize", f, "alice", "Sec-Fetch-Site", "same-origin"); r.status != 303 {
			t.Fatalf("first: %d", r.status)
		}
		if r := e.post("/oauth/authorize", f, "alice", "Sec-Fetch-Site", "same-origin"); r.status != 400 {
			t.Fatalf("second: %d", r.status)
		}
	})
}

// TestOpaqueTokenChecks: what Check refuses.
func TestOpaqueTokenChecks(t *testing.T) {
	e := newEnv(t)
	for _, tok := range []string{"", "fbo_", "fbo_unknown", "fbr_x", "eyJhbGciOiJIUzI1NiJ9.e30.x", strings.Repeat("fbo_", 100)} {
		if got := e.check(tok); got == "ok" {
			t.Errorf("Check(%q) accepted", tok)
		}
	}
	id := e.newClient(cb)
	_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
	// A refresh token is not an access token.
	if e.check(tk.Refresh) == "ok" {
		t.Error("a refresh token was accepted as an access token")
	}
	if !Owns(tk.Access) || Owns("eyJhbGciOiJIUzI1NiJ9.e30.x") {
		t.Error("Owns must tell opaque tokens from JWTs")
	}
}

// TestCORS: a client in a web page may read the metadata and use the
// token endpoint from another origin; the pages that rely on the
// person's sign-in allow no other origin.
func TestCORS(t *testing.T) {
	e := newEnv(t)
	for path, want := range map[string]string{
		"/.well-known/oauth-authorization-server": "*", "/oauth/token": "*", "/oauth/register": "*", "/oauth/revoke": "*",
		"/oauth/authorize": "", "/oauth/consents": "",
	} {
		req, _ := http.NewRequest(http.MethodOptions, e.ts.URL+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		r := e.do(req)
		if got := r.header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", path, got, want)
		}
		if want == "*" && (r.status != 204 || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization")) {
			t.Errorf("%s: preflight %d %v", path, r.status, r.header)
		}
	}
}

// TestCheckNamedGrant: an access token names its grant, read beside its
// record; the record decides. A token from before tokens named their grant
// still checks (its grant read after its record), a name that is not the
// record's grant is not believed, and a revoked grant ends its tokens
// whichever way they are read.
func TestCheckNamedGrant(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
	named, _, ok := strings.Cut(strings.TrimPrefix(tk.Access, AccessPrefix), ".")
	if !ok || named == "" {
		t.Fatalf("the access token %q does not name its grant", tk.Access)
	}
	if got := e.check(tk.Access); got != "ok" {
		t.Fatalf("named token: %s", got)
	}
	ctx := context.Background()
	var rec tokenRecord
	if err := e.srv.loadJSON(ctx, keyAccess(tk.Access), &rec); err != nil || rec.Grant != named {
		t.Fatalf("record %+v (%v), the token names %s", rec, err, named)
	}
	// As issued before: no grant in the token.
	legacy := AccessPrefix + "legacy0123456789"
	if err := e.srv.putJSON(ctx, keyAccess(legacy), rec, AccessTTL); err != nil {
		t.Fatal(err)
	}
	if got := e.check(legacy); got != "ok" {
		t.Fatalf("token without a grant name: %s", got)
	}
	// A token whose name is another, live grant: its record's grant counts.
	_, other := e.exchange(id, cb, e.code(id, cb, "bob"))
	otherGrant, _, _ := strings.Cut(strings.TrimPrefix(other.Access, AccessPrefix), ".")
	misnamed := AccessPrefix + otherGrant + ".x0123456789"
	if err := e.srv.putJSON(ctx, keyAccess(misnamed), rec, AccessTTL); err != nil {
		t.Fatal(err)
	}
	claims, aerr := e.srv.Check(ctx, misnamed)
	if aerr != nil || claims.Subject != "alice" {
		t.Fatalf("misnamed token: %+v %v, want alice's grant", claims, aerr)
	}
	if err := e.srv.revokeGrant(ctx, named, "test"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{tk.Access, legacy, misnamed} {
		if got := e.check(tok); got != "revoked" {
			t.Fatalf("after the grant was revoked, %q checks %s", tok, got)
		}
	}
	if got := e.check(other.Access); got != "ok" {
		t.Fatalf("bob's token after alice's grant was revoked: %s", got)
	}
}
