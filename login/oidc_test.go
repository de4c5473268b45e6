package login

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// testProvider is an OpenID provider for unit tests: discovery, a JWKS, and
// a token endpoint that checks the PKCE verifier (RFC 7636) and signs ID
// tokens with claims each test chooses, so that a test can make it send a
// wrong nonce or audience. The e2e tests use a certified provider
// (oidc-provider); this one lets the unit tests be hostile.
type testProvider struct {
	srv *httptest.Server
	key *rsa.PrivateKey

	mu    sync.Mutex
	codes map[string]issued
}

type issued struct {
	challenge, redirectURI string
	claims                 jwt.MapClaims
}

// providerKey is generated once: RSA key generation is most of these
// tests' time otherwise.
var providerKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func newTestProvider(t *testing.T) *testProvider {
	t.Helper()
	key, err := providerKey()
	if err != nil {
		t.Fatal(err)
	}
	p := &testProvider{key: key, codes: map[string]issued{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.srv.URL, "authorization_endpoint": p.srv.URL + "/auth", "token_endpoint": p.srv.URL + "/token",
			"jwks_uri": p.srv.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		enc := base64.RawURLEncoding.EncodeToString
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
			"n": enc(key.N.Bytes()), "e": enc(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, _ := r.BasicAuth()
		p.mu.Lock()
		is, ok := p.codes[r.PostFormValue("code")]
		delete(p.codes, r.PostFormValue("code"))
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		switch {
		case id != "mcpfb" || secret != "s3cret":
			tokenError(w, "invalid_client")
		case !ok || r.PostFormValue("redirect_uri") != is.redirectURI:
			tokenError(w, "invalid_grant")
		case base64.RawURLEncoding.EncodeToString(sum[:]) != is.challenge:
			tokenError(w, "invalid_grant")
		default:
			tok := jwt.NewWithClaims(jwt.SigningMethodRS256, is.claims)
			tok.Header["kid"] = "k1"
			signed, err := tok.SignedString(key)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": signed})
		}
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func tokenError(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

// signIn plays the person at the provider: it takes the authorization
// request our /login redirected to, and returns a code for it whose ID
// token carries claims (the request's nonce unless claims sets one).
func (p *testProvider) signIn(t *testing.T, authURL string, claims jwt.MapClaims) (code, state string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil || !strings.HasPrefix(authURL, p.srv.URL+"/auth?") {
		t.Fatalf("not an authorization request to the provider: %q", authURL)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" ||
		q.Get("response_type") != "code" || !strings.Contains(q.Get("scope"), "openid") {
		t.Fatalf("authorization request lacks PKCE S256, nonce, state or openid: %s", u.RawQuery)
	}
	now := time.Now()
	c := jwt.MapClaims{"iss": p.srv.URL, "aud": "mcpfb", "sub": "alice-sub", "nonce": q.Get("nonce"),
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	code = randomToken()
	p.mu.Lock()
	p.codes[code] = issued{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), claims: c}
	p.mu.Unlock()
	return code, q.Get("state")
}

type oidcFixture struct {
	p      *testProvider
	l      *OIDC
	kv     store.KV
	now    time.Time
	routes map[string]http.Handler
}

func newOIDCFixture(t *testing.T, claim string, allow ...string) *oidcFixture {
	t.Helper()
	f := &oidcFixture{p: newTestProvider(t), now: time.Now()}
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	f.kv = mem
	al, err := NewAllowList(allow, claim)
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return f.now }
	f.l, err = NewOIDC(OIDCOptions{Issuer: f.p.srv.URL, ClientID: "mcpfb", ClientSecret: "s3cret",
		Scopes: []string{"openid", "email"}, Claim: claim, Allow: al,
		Sessions: NewSessions(f.kv, time.Hour, false, clock), Records: f.kv,
		Origin: "https://fb.example", Mount: "/m"})
	if err != nil {
		t.Fatal(err)
	}
	f.routes = f.l.Routes()
	return f
}

// serve runs one request through the routes with the given cookies.
func (f *oidcFixture) serve(method, target string, cookies []*http.Cookie, headers ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "https://fb.example"+target, nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	path, _, _ := strings.Cut(target, "?")
	w := httptest.NewRecorder()
	f.routes[path].ServeHTTP(w, r)
	return w
}

func cookie(w *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// start begins a sign-in and returns the provider's URL and the flow cookie.
func (f *oidcFixture) start(t *testing.T, back string) (string, *http.Cookie) {
	t.Helper()
	w := f.serve("GET", "/login?back="+url.QueryEscape(back), nil)
	fc := cookie(w, "__Host-mcpfb_login")
	if w.Code != 303 || fc == nil || !fc.HttpOnly || !fc.Secure || fc.SameSite != http.SameSiteLaxMode || fc.Path != "/" {
		t.Fatalf("start: %d %q, flow cookie %+v", w.Code, w.Body, fc)
	}
	loc := w.Header().Get("Location")
	if q, _ := url.Parse(loc); q.Query().Get("redirect_uri") != "https://fb.example/m/login/callback" {
		t.Fatalf("redirect_uri %q", q.Query().Get("redirect_uri"))
	}
	return loc, fc
}

func callbackURL(code, state string) string {
	return "/login/callback?" + url.Values{"code": {code}, "state": {state}}.Encode()
}

// TestOIDCSignIn: the whole flow, the session cookie's attributes, whoami,
// sign-out (same origin only) and what an ended or expired session is.
func TestOIDCSignIn(t *testing.T) {
	f := newOIDCFixture(t, ClaimEmail, "alice@example.com")
	loc, fc := f.start(t, "/m/inbox")
	code, state := f.p.signIn(t, loc, jwt.MapClaims{"email": "Alice@Example.com", "email_verified": true, "name": "Alice"})
	w := f.serve("GET", callbackURL(code, state), []*http.Cookie{fc})
	if w.Code != 303 || w.Header().Get("Location") != "https://fb.example/m/inbox" {
		t.Fatalf("callback: %d %q Location %q", w.Code, w.Body, w.Header().Get("Location"))
	}
	sc := cookie(w, "__Host-mcpfb_session")
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.Domain != "" || sc.MaxAge != 3600 {
		t.Fatalf("session cookie %+v", sc)
	}
	if c := cookie(w, "__Host-mcpfb_login"); c == nil || c.MaxAge >= 0 {
		t.Fatalf("the flow cookie is not cleared: %+v", c)
	}
	session := []*http.Cookie{sc}
	if w := f.serve("GET", "/login/whoami", session); w.Code != 200 || w.Body.String() != `{"id":"alice@example.com","name":"Alice"}`+"\n" {
		t.Fatalf("whoami: %d %s", w.Code, w.Body)
	}
	// The store holds the session under the id's digest, never the id.
	if _, err := f.kv.Load(t.Context(), "login:session:"+sc.Value); err == nil {
		t.Fatal("the store holds the raw session id")
	}
	// Signed in already: /login goes straight back.
	if w := f.serve("GET", "/login?back=/m/x", session); w.Code != 303 || w.Header().Get("Location") != "https://fb.example/m/x" {
		t.Fatalf("login when signed in: %d %s", w.Code, w.Header().Get("Location"))
	}
	// Sign-out from another site, or with nothing saying where from, is refused.
	for _, h := range [][]string{{"Origin", "https://evil.example"}, {"Origin", "null"}, {"Sec-Fetch-Site", "cross-site"}, {}} {
		if w := f.serve("POST", "/logout", session, h...); w.Code != 403 || !strings.Contains(w.Body.String(), "must come from a page of https://fb.example") {
			t.Fatalf("logout with %v: %d %s", h, w.Code, w.Body)
		}
	}
	if w := f.serve("GET", "/logout", session, "Origin", "https://fb.example"); w.Code != 405 {
		t.Fatalf("GET /logout: %d", w.Code)
	}
	if w := f.serve("POST", "/logout", session, "Origin", "https://fb.example"); w.Code != 204 || cookie(w, "__Host-mcpfb_session").MaxAge >= 0 {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	// The same cookie, replayed after sign-out, is nobody's.
	if w := f.serve("GET", "/login/whoami", session); w.Code != 401 {
		t.Fatalf("whoami after logout: %d %s", w.Code, w.Body)
	}
}

func TestOIDCSessionExpires(t *testing.T) {
	f := newOIDCFixture(t, ClaimSub, "alice-sub")
	loc, fc := f.start(t, "/")
	code, state := f.p.signIn(t, loc, nil)
	sc := cookie(f.serve("GET", callbackURL(code, state), []*http.Cookie{fc}), "__Host-mcpfb_session")
	if w := f.serve("GET", "/login/whoami", []*http.Cookie{sc}); w.Code != 200 || !strings.Contains(w.Body.String(), `"id":"alice-sub"`) {
		t.Fatalf("whoami: %d %s", w.Code, w.Body)
	}
	f.now = f.now.Add(time.Hour)
	if w := f.serve("GET", "/login/whoami", []*http.Cookie{sc}); w.Code != 401 {
		t.Fatalf("whoami after the session's TTL: %d %s", w.Code, w.Body)
	}
}

// TestOIDCHostile: every way a callback, a cookie or a provider's answer
// can be wrong gets a 4xx that says what was wrong, never a session.
func TestOIDCHostile(t *testing.T) {
	type step struct {
		claims jwt.MapClaims
		// edit changes the callback's query and cookies before it is sent.
		edit func(f *oidcFixture, q url.Values, cookies []*http.Cookie) (url.Values, []*http.Cookie)
	}
	for _, tc := range []struct {
		name   string
		claim  string
		allow  []string
		step   step
		status int
		want   string
	}{
		{"state missing", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			q.Del("state")
			return q, c
		}}, 400, "has no state"},
		{"state unknown", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			q.Set("state", randomToken())
			return q, c
		}}, 400, "unknown, expired or already used"},
		{"state garbage", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			q.Set("state", "../../etc/passwd \x00")
			return q, c
		}}, 400, "unknown, expired or already used"},
		{"state reused", ClaimSub, []string{"*"}, step{edit: func(f *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			f.serve("GET", "/login/callback?"+q.Encode(), c) // the first use signs in
			return q, c
		}}, 400, "unknown, expired or already used"},
		{"flow cookie missing (login CSRF)", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, _ []*http.Cookie) (url.Values, []*http.Cookie) {
			return q, nil
		}}, 400, "started in another browser"},
		{"flow cookie of another sign-in", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, _ []*http.Cookie) (url.Values, []*http.Cookie) {
			return q, []*http.Cookie{{Name: "__Host-mcpfb_login", Value: randomToken()}}
		}}, 400, "started in another browser"},
		{"provider error", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			q.Del("code")
			q.Set("error", "access_denied")
			q.Set("error_description", "<script>alert(1)</script>")
			return q, c
		}}, 403, "did not sign you in (access_denied): &lt;script&gt;"},
		{"code missing", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			q.Del("code")
			return q, c
		}}, 400, "has no code"},
		{"code refused by the provider", ClaimSub, []string{"*"}, step{edit: func(_ *oidcFixture, q url.Values, c []*http.Cookie) (url.Values, []*http.Cookie) {
			q.Set("code", "forged")
			return q, c
		}}, 400, "refused the sign-in code (invalid_grant)"},
		{"wrong nonce", ClaimSub, []string{"*"}, step{claims: jwt.MapClaims{"nonce": "another"}}, 400, "nonce does not match"},
		{"no nonce", ClaimSub, []string{"*"}, step{claims: jwt.MapClaims{"nonce": nil}}, 400, "nonce does not match"},
		{"ID token for another client", ClaimSub, []string{"*"}, step{claims: jwt.MapClaims{"aud": "other-client"}}, 400, "ID token was refused"},
		{"ID token from another issuer", ClaimSub, []string{"*"}, step{claims: jwt.MapClaims{"iss": "https://evil.example"}}, 400, "ID token was refused"},
		{"ID token expired", ClaimSub, []string{"*"}, step{claims: jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()}}, 400, "ID token was refused"},
		{"not on the allow list", ClaimSub, []string{"bob-sub"}, step{}, 403, "alice-sub may not sign in"},
		{"domain not allowed", ClaimEmail, []string{"@example.com"}, step{claims: jwt.MapClaims{"email": "alice@evil.example", "email_verified": true}}, 403, "may not sign in"},
		{"lookalike domain not allowed", ClaimEmail, []string{"@example.com"}, step{claims: jwt.MapClaims{"email": "alice@notexample.com", "email_verified": true}}, 403, "may not sign in"},
		{"email not verified", ClaimEmail, []string{"@example.com"}, step{claims: jwt.MapClaims{"email": "alice@example.com", "email_verified": false}}, 403, "has not verified the email address"},
		{"email_verified missing", ClaimEmail, []string{"@example.com"}, step{claims: jwt.MapClaims{"email": "alice@example.com"}}, 403, "has not verified the email address"},
		{"claim missing", ClaimPreferredUsername, []string{"*"}, step{}, 403, "has no preferred_username claim"},
		{"claim with a control character", ClaimPreferredUsername, []string{"*"}, step{claims: jwt.MapClaims{"preferred_username": "al\nice"}}, 403, "cannot name a person"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newOIDCFixture(t, tc.claim, tc.allow...)
			loc, fc := f.start(t, "/m/inbox")
			code, state := f.p.signIn(t, loc, tc.step.claims)
			q, cookies := url.Values{"code": {code}, "state": {state}}, []*http.Cookie{fc}
			if tc.step.edit != nil {
				q, cookies = tc.step.edit(f, q, cookies)
			}
			w := f.serve("GET", "/login/callback?"+q.Encode(), cookies)
			if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("%d %s; want %d saying %q", w.Code, w.Body, tc.status, tc.want)
			}
			if c := cookie(w, "__Host-mcpfb_session"); c != nil {
				t.Fatalf("a refused sign-in set a session cookie: %+v", c)
			}
			if w.Header().Get("Content-Security-Policy") == "" || w.Header().Get("Referrer-Policy") != "no-referrer" {
				t.Fatalf("error page headers: %v", w.Header())
			}
		})
	}
}

// TestSessionCookies: a session is read from nothing but a well-formed
// cookie whose record is in the store.
func TestSessionCookies(t *testing.T) {
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	s := NewSessions(mem, time.Hour, false, nil)
	w := httptest.NewRecorder()
	if err := s.Start(w, httptest.NewRequest("GET", "/", nil), identity.Person{ID: "alice"}); err != nil {
		t.Fatal(err)
	}
	good := w.Result().Cookies()[0]
	for _, tc := range []struct {
		name string
		c    *http.Cookie
		ok   bool
	}{
		{"the session", good, true},
		{"no cookie", nil, false},
		{"forged (random, unknown)", &http.Cookie{Name: good.Name, Value: randomToken()}, false},
		{"garbage", &http.Cookie{Name: good.Name, Value: "not-a-session"}, false},
		{"overlong", &http.Cookie{Name: good.Name, Value: strings.Repeat("a", 4000)}, false},
		{"the store key itself", &http.Cookie{Name: good.Name, Value: digest(good.Value)}, false},
		{"without the __Host- prefix", &http.Cookie{Name: "mcpfb_session", Value: good.Value}, false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.c != nil {
			r.AddCookie(tc.c)
		}
		p, err := s.Person(r)
		if tc.ok != (err == nil) || (err != nil && err != identity.ErrNotSignedIn) || (tc.ok && p.ID != "alice") {
			t.Errorf("%s: %+v %v", tc.name, p, err)
		}
	}
	// A plain-http loopback site cannot use __Host- (browsers refuse it
	// without Secure), and only there.
	w = httptest.NewRecorder()
	if err := NewSessions(mem, time.Hour, true, nil).Start(w, httptest.NewRequest("GET", "/", nil), identity.Person{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if c := w.Result().Cookies()[0]; c.Name != "mcpfb_session" || c.Secure || !c.HttpOnly {
		t.Fatalf("plain-http cookie %+v", c)
	}
}

func TestAllowList(t *testing.T) {
	for _, tc := range []struct {
		entries []string
		claim   string
		err     string
	}{
		{nil, ClaimSub, "lists nobody"},
		{[]string{"@example.com"}, ClaimSub, "needs claim email"},
		{[]string{"@"}, ClaimEmail, "not a domain"},
		{[]string{"a b"}, ClaimSub, "not an id"},
		{[]string{"*", "alice"}, ClaimSub, "list nothing else"},
	} {
		if _, err := NewAllowList(tc.entries, tc.claim); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v (%s): %v, want %q", tc.entries, tc.claim, err, tc.err)
		}
	}
	a, err := NewAllowList([]string{"Alice@Example.com", "@corp.example"}, ClaimEmail)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"alice@example.com": true, "ALICE@example.com": true, "bob@example.com": false,
		"bob@corp.example": true, "bob@sub.corp.example": false, "bob@evilcorp.example": false, "corp.example": false} {
		if a.Allows(id, ClaimEmail) != want {
			t.Errorf("Allows(%q) = %v", id, !want)
		}
	}
}
