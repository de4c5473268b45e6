package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var oidcjsDir, _ = filepath.Abs("oidcjs")

// startOIDCProvider runs e2e/oidcjs/provider.mjs, a real OpenID provider
// (panva/oidc-provider), on a free loopback port with one client, mcpfb,
// allowed to redirect to redirectURI; it returns the issuer once the
// provider listens. The process is stopped (by its PID, through the
// command's context) when the test ends.
func startOIDCProvider(t *testing.T, redirectURI string) string {
	t.Helper()
	issuer, _ := runOIDCScript(t, "provider.mjs", fmt.Sprint(freePort(t)), redirectURI)
	return issuer
}

// runOIDCScript runs a script of e2e/oidcjs (panva/oidc-provider) with
// args under Node 22 and returns, once it prints {"ready": issuer}, the
// issuer and stop, which ends the process (by its PID, through the
// command's context) and waits until it has exited; stop also runs when
// the test ends, and the script's stderr is logged if the test failed.
func runOIDCScript(t *testing.T, script string, args ...string) (string, func()) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(oidcjsDir, "node_modules", "oidc-provider")); err != nil {
		t.Fatalf("e2e/oidcjs/node_modules/oidc-provider is missing: run `make deps` (npm ci in e2e/oidcjs)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node22(t), append([]string{script}, args...)...)
	cmd.Dir = oidcjsDir
	cmd.Env = append(os.Environ(), "NODE_ENV=test")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev struct{ Ready string }
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Ready != "" {
				ready <- ev.Ready
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-exited
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s %v stderr:\n%s", script, args, tail(stderr.String(), 3000))
		}
	})
	select {
	case issuer := <-ready:
		return issuer, stop
	case <-exited:
		t.Fatalf("%s exited: %s", script, tail(stderr.String(), 2000))
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not listen within 30 s: %s", script, tail(stderr.String(), 2000))
	}
	return "", stop
}

// cookieBrowser is a person's browser without JavaScript: a cookie jar that
// follows redirects, remembering where it went.
type cookieBrowser struct {
	c       *http.Client
	visited []*url.URL
}

func newCookieBrowser(t *testing.T) *cookieBrowser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &cookieBrowser{}
	b.c = &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		b.visited = append(b.visited, r.URL)
		if len(via) > 20 {
			return fmt.Errorf("more than 20 redirects")
		}
		return nil
	}}
	return b
}

// get and post return the final response (status, URL, body).
func (b *cookieBrowser) do(t *testing.T, req *http.Request) (int, *url.URL, string) {
	t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Request.URL, string(body)
}

func (b *cookieBrowser) get(t *testing.T, u string) (int, *url.URL, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b.do(t, req)
}

func (b *cookieBrowser) post(t *testing.T, u string, form url.Values, headers ...string) (int, *url.URL, string) {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.do(t, req)
}

var formAction = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)

// signInAt drives oidc-provider's development interactions: from /login
// on the site, the login form (any name, any password), then consent. It
// returns the final response: the site's page after the callback, or the
// callback's error page.
func (b *cookieBrowser) signInAt(t *testing.T, site, back, login string) (int, *url.URL, string) {
	t.Helper()
	status, at, body := b.get(t, site+"/login?back="+url.QueryEscape(back))
	for _, step := range []url.Values{
		{"prompt": {"login"}, "login": {login}, "password": {"any"}},
		{"prompt": {"consent"}},
	} {
		m := formAction.FindStringSubmatch(body)
		if status != 200 || m == nil {
			t.Fatalf("expected the provider's %s form at %s: %d %s", step.Get("prompt"), at, status, tail(body, 500))
		}
		action, err := at.Parse(html.UnescapeString(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		status, at, body = b.post(t, action.String(), step)
	}
	return status, at, body
}

// callbackVisited is the site's callback URL the browser was sent to.
func (b *cookieBrowser) callbackVisited(t *testing.T) string {
	t.Helper()
	for _, u := range b.visited {
		if u.Path == "/login/callback" {
			return u.String()
		}
	}
	t.Fatal("the browser never reached /login/callback")
	return ""
}

// TestLoginOIDC: `login oidc` on the real binary against a real OpenID
// provider, with sessions in a real Redis shared by two instances: sign in
// on one, the other knows the person, sign-out on that one ends the
// session on both, and so does the store expiring it. A replayed
// callback, an unverified email and a person not on the allow list are
// refused.
func TestLoginOIDC(t *testing.T) {
	rs := redistest.Start(t)
	a := newCaddy(t, "OIDC_CLIENT_SECRET=mcpfb-e2e-secret")
	issuer := startOIDCProvider(t, a.HTTP+"/login/callback")
	sites := func(c *Caddy) string {
		return fmt.Sprintf(`
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		public_url %s
		store redis %s {
			key_prefix e2elogin:
		}
		login oidc %s {
			client_id mcpfb
			client_secret {env.OIDC_CLIENT_SECRET}
			claim email
			allow alice@example.com unverified-bob@example.com
			session_ttl 1h
			insecure_loopback_for_tests
		}
	}
	respond "the site's page {path}" 200
}
`, c.HTTP, rs.URL(), issuer)
	}
	a.start(sites(a))
	b := newCaddy(t, "OIDC_CLIENT_SECRET=mcpfb-e2e-secret")
	b.start(sites(b))

	person := newCookieBrowser(t)
	status, at, body := person.signInAt(t, a.HTTP, "/inbox", "alice")
	if status != 200 || at.String() != a.HTTP+"/inbox" || body != "the site's page /inbox" {
		t.Fatalf("after signing in: %d at %s: %s", status, at, tail(body, 500))
	}
	for _, site := range []string{a.HTTP, b.HTTP} {
		if status, _, body := person.get(t, site+"/login/whoami"); status != 200 || body != `{"id":"alice@example.com","name":"Person alice"}`+"\n" {
			t.Fatalf("whoami on %s: %d %s", site, status, body)
		}
	}
	// The callback, replayed (from history, a log, a proxy), signs nobody in.
	stranger := newCookieBrowser(t)
	if status, _, body := stranger.get(t, person.callbackVisited(t)); status != 400 || !strings.Contains(body, "unknown, expired or already used") {
		t.Fatalf("replayed callback: %d %s", status, tail(body, 500))
	}
	if status, _, _ := stranger.get(t, a.HTTP+"/login/whoami"); status != 401 {
		t.Fatalf("whoami after a replayed callback: %d", status)
	}
	// Sign-out from another site is refused; from the site, it ends the
	// session on every instance.
	if status, _, body := person.post(t, b.HTTP+"/logout", nil, "Origin", "https://evil.example"); status != 403 {
		t.Fatalf("cross-site logout: %d %s", status, body)
	}
	if status, _, body := person.post(t, b.HTTP+"/logout", nil, "Origin", b.HTTP); status != 204 {
		t.Fatalf("logout: %d %s", status, body)
	}
	for _, site := range []string{a.HTTP, b.HTTP} {
		if status, _, body := person.get(t, site+"/login/whoami"); status != 401 || !strings.Contains(body, "not signed in") {
			t.Fatalf("whoami on %s after logout: %d %s", site, status, body)
		}
	}

	// The session lives in Redis under its id's digest with the session's
	// TTL; when the store expires it, the person is signed out on every
	// instance, their cookie notwithstanding.
	again := newCookieBrowser(t)
	if status, _, body := again.signInAt(t, a.HTTP, "/", "alice"); status != 200 {
		t.Fatalf("signing in again: %d %s", status, tail(body, 500))
	}
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := t.Context()
	keys, err := cl.Do(ctx, cl.B().Keys().Pattern("e2elogin:kv:{login:session:*").Build()).AsStrSlice()
	if err != nil || len(keys) != 1 {
		t.Fatalf("session records in Redis: %v %v", keys, err)
	}
	for _, c := range again.c.Jar.Cookies(mustURL(t, a.HTTP)) {
		if c.Name == "mcpfb_session" && strings.Contains(keys[0], c.Value) {
			t.Fatal("Redis holds the raw session id")
		}
	}
	if ttl, err := cl.Do(ctx, cl.B().Pttl().Key(keys[0]).Build()).AsInt64(); err != nil || ttl <= 0 || ttl > time.Hour.Milliseconds() {
		t.Fatalf("the session record's TTL is %d ms (%v), want at most session_ttl 1h", ttl, err)
	}
	if err := cl.Do(ctx, cl.B().Pexpire().Key(keys[0]).Milliseconds(1).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{a.HTTP, b.HTTP} {
		if !eventually(5*time.Second, func() bool { status, _, _ := again.get(t, site+"/login/whoami"); return status == 401 }) {
			t.Fatalf("whoami on %s still answers after the session expired in the store", site)
		}
	}

	for _, tc := range []struct{ login, want string }{
		{"unverified-bob", "has not verified the email address unverified-bob@example.com"},
		{"carol", "carol@example.com may not sign in"},
	} {
		br := newCookieBrowser(t)
		status, at, body := br.signInAt(t, a.HTTP, "/inbox", tc.login)
		if status != 403 || at.Path != "/login/callback" || !strings.Contains(body, tc.want) {
			t.Fatalf("%s: %d at %s: %s", tc.login, status, at, tail(body, 500))
		}
		if status, _, _ := br.get(t, a.HTTP+"/login/whoami"); status != 401 {
			t.Fatalf("%s: whoami after a refused sign-in: %d", tc.login, status)
		}
	}
}
