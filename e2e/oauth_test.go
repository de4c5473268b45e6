package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"
)

var oauthjsDir, _ = filepath.Abs("oauthjs")

// oauthSites is a site configured with `login` and nothing else hand-made:
// no jwt_secret, no token minted for the agent. basic_auth guards the
// person's paths only; the agent's paths carry its OAuth access token.
func oauthSites(t *testing.T, scheme string, extra string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	port := "{HTTP}"
	if scheme == "https" {
		port = "{HTTPS}"
	}
	return fmt.Sprintf(`
%[1]s://127.0.0.1:%[2]s {
	%[4]s
	@person path /login /login/* /oauth/authorize /oauth/consents
	basic_auth @person {
		alice %[3]s
	}
	mcp_feedback {
		public_url %[1]s://127.0.0.1:%[2]s
		login caddy
	}
}
`, scheme, port, hash, extra)
}

// callbackReceiver is the client's redirect URI: a local server that
// receives the authorization response as RFC 6749 §4.1.2 defines it (the
// code, state and iss in the query), as a native app's loopback listener
// does (RFC 8252 §7.3).
func callbackReceiver(t *testing.T) (string, <-chan url.Values) {
	got := make(chan url.Values, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		got <- r.URL.Query()
		fmt.Fprint(w, "signed in; you can close this window")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/callback", got
}

// runOAuthClient starts oauthjs/oauth-client.mjs (see its header).
func runOAuthClient(t *testing.T, serverURL string, env ...string) *nodeProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, node22(t), "oauth-client.mjs", serverURL)
	cmd.Dir = oauthjsDir
	cmd.Env = append(append(os.Environ(), "MCPJS_DIR="+mcpjsDir, "HOME="+t.TempDir(),
		"NO_PROXY=*", "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy="), env...)
	p := &nodeProc{t: t, cmd: cmd, events: make(chan map[string]any, 64), stderr: &syncBuffer{}, exited: make(chan error, 1), cancel: cancel}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
		close(p.events)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		cancel()
		<-p.exited
		if t.Failed() {
			t.Logf("oauth-client.mjs stderr:\n%s", tail(p.stderr.String(), 3000))
		}
	})
	return p
}

// send writes one line to the script.
func (p *nodeProc) send(line string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		p.t.Fatal(err)
	}
}

// consentInBrowser signs alice in (basic_auth, as her browser would send
// it) and clicks Allow on the consent page in headless Chromium; it
// returns the authorization response the callback received.
func consentInBrowser(t *testing.T, authURL string, callback <-chan url.Values, wantOnPage ...string) url.Values {
	t.Helper()
	tab := newTab(t, newBrowser(t), desktop)
	if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Basic " + b64("alice:alice-password")}}); err != nil {
		t.Fatal(err)
	}
	step(t, tab, "open the authorization URL", chromedp.Navigate(authURL), chromedp.WaitVisible(chromedp.ID("approve")))
	text := eval[string](t, tab, `document.body.innerText`)
	for _, want := range wantOnPage {
		if !strings.Contains(text, want) {
			t.Errorf("the consent page does not show %q:\n%s", want, text)
		}
	}
	if n := eval[float64](t, tab, `window.__csp.length + window.__xss`); n != 0 {
		t.Errorf("the consent page broke its CSP: %v", eval[[]string](t, tab, `window.__csp`))
	}
	screenshot(t, tab, "oauth-consent")
	checkAxe(t, tab, "oauth-consent")
	step(t, tab, "click Allow", chromedp.Click(chromedp.ID("approve")))
	select {
	case q := <-callback:
		return q
	case <-time.After(30 * time.Second):
		t.Fatalf("the callback got nothing; the browser is at %s", eval[string](t, tab, `location.href`))
	}
	return nil
}

// TestOAuthMCPClient: an MCP client that speaks only OAuth (the official
// TypeScript SDK) connects to a site configured with `login` and nothing
// else: 401 → discovery → Dynamic Client Registration → sign-in and
// consent in Chromium → token → tools/list → interactive_feedback →
// refresh → revoke → 401.
func TestOAuthMCPClient(t *testing.T) {
	c := startMCPCaddy(t, oauthSites(t, "http", ""))
	callback, got := callbackReceiver(t)
	p := runOAuthClient(t, c.HTTP+"/mcp", "CALLBACK_URL="+callback)

	authURL := p.expect("authorize")["url"].(string)
	u, err := url.Parse(authURL)
	if err != nil || u.Path != "/oauth/authorize" || u.Query().Get("code_challenge_method") != "S256" ||
		u.Query().Get("resource") == "" || !strings.Contains(u.Query().Get("scope"), "feedback:create") {
		t.Fatalf("authorization URL %s: want PKCE S256, a resource and the scopes from the 401", authURL)
	}
	reg := p.expect("registered")
	if id, _ := reg["clientId"].(string); !strings.HasPrefix(id, "dcr_") {
		t.Fatalf("registration: %v", reg)
	}
	q := consentInBrowser(t, authURL, got, "OAuth e2e client", "alice", "Ask you questions")
	if q.Get("iss") != c.HTTP || q.Get("code") == "" || q.Get("state") != u.Query().Get("state") {
		t.Fatalf("authorization response %v: want a code, the state and iss=%s", q, c.HTTP)
	}
	p.send(q.Get("code"))
	if a := p.expect("authorized"); a["scope"] != "feedback:create feedback:read" || a["tokenType"] != "Bearer" || a["hasRefresh"] != true {
		t.Fatalf("tokens: %v", a)
	}
	tools := fmt.Sprint(p.expect("tools")["tools"])
	if !strings.Contains(tools, "interactive_feedback") {
		t.Fatalf("tools/list: %s", tools)
	}
	created := asResult(t, p.expect("created"))
	link, _ := created.Structured["feedbackUrl"].(string)
	if created.IsError || link == "" {
		t.Fatalf("interactive_feedback: %+v", created)
	}
	answer(t, c, link, `{"selectedOptions":["yes"],"freeText":"via OAuth"}`)
	p.send("go")
	res := asResult(t, p.expect("result"))
	if r, _ := res.Structured["result"].(map[string]any); r == nil || r["freeText"] != "via OAuth" {
		t.Fatalf("result: %+v", res)
	}
	if r := p.expect("refreshed"); r["rotated"] != true || r["tools"].(float64) < 4 {
		t.Fatalf("refresh: %v", r)
	}
	rv := p.expect("revoked")
	if rv["revokeStatus"].(float64) != 200 || rv["status"].(float64) != 401 || !strings.Contains(fmt.Sprint(rv["challenge"]), "resource_metadata=") {
		t.Fatalf("after revoke: %v", rv)
	}
	p.finish()
	// The question belongs to the person who signed in.
	c.waitLog(t, `"sub":"alice"`)
}
