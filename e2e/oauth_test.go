package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/security"
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
	return runOAuthScript(t, []string{"oauth-client.mjs", serverURL}, env...)
}

// runOAuthScript starts a script of oauthjs with args.
func runOAuthScript(t *testing.T, args []string, env ...string) *nodeProc {
	t.Helper()
	return startNode(t, oauthjsDir, append([]string{"MCPJS_DIR=" + mcpjsDir}, env...), args...)
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
	if strings.HasPrefix(authURL, "https://localhost:") {
		// The test's own Caddy with `tls internal`: its local CA is not in
		// this fresh profile's trust store.
		if _, err := chromedp.Call(tab, security.SetIgnoreCertificateErrors, security.SetIgnoreCertificateErrorsParams{Ignore: true}); err != nil {
			t.Fatal(err)
		}
	}
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
	oauthClientFlow(t, c, p, c.HTTP, got, "dcr_")
}

// TestOAuthMCPClientMetadataDocument: the same flow with a Client ID
// Metadata Document instead of registration: the client_id is an https
// URL (served here by the same Caddy with `tls internal`; the server's
// test switch lets it fetch from loopback, the SDK trusts the local CA
// through NODE_EXTRA_CA_CERTS).
func TestOAuthMCPClientMetadataDocument(t *testing.T) {
	callback, got := callbackReceiver(t)
	c := newCaddy(t)
	c.Globals = debugLogs
	site := fmt.Sprintf("https://localhost:%d", c.HTTPSPort)
	doc := fmt.Sprintf(`{"client_id":"%s/client.json","client_name":"CIMD e2e client","redirect_uris":["%s"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none"}`, site, callback)
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	c.start(fmt.Sprintf(`
http://127.0.0.1:{HTTP} {
	respond /health "ok" 200
}
https://localhost:{HTTPS} {
	tls internal
	handle /client.json {
		header Content-Type application/json
		header Cache-Control "max-age=300"
		respond %q 200
	}
	@person path /login /login/* /oauth/authorize /oauth/consents
	basic_auth @person {
		alice %s
	}
	mcp_feedback {
		public_url https://localhost:{HTTPS}
		login caddy
		oauth_cimd_insecure_loopback_for_tests
	}
}
`, doc, hash))
	c.waitLog(t, "oauth_cimd_insecure_loopback_for_tests is on")
	root := filepath.Join(c.Dir, "storage", "pki", "authorities", "local", "root.crt")
	p := runOAuthClient(t, site+"/mcp", "CALLBACK_URL="+callback, "CLIENT_METADATA_URL="+site+"/client.json", "NODE_EXTRA_CA_CERTS="+root)
	oauthClientFlow(t, c, p, site, got, site+"/client.json")
}

// oauthClientFlow drives oauth-client.mjs from the authorization URL to
// the 401 after revocation; clientID is the client_id the registration
// must have given (a prefix for DCR, the document URL for CIMD).
func oauthClientFlow(t *testing.T, c *Caddy, p *nodeProc, issuer string, got <-chan url.Values, clientID string) {
	t.Helper()
	authURL := p.expect("authorize")["url"].(string)
	u, err := url.Parse(authURL)
	if err != nil || u.Path != "/oauth/authorize" || u.Query().Get("code_challenge_method") != "S256" ||
		u.Query().Get("resource") == "" || !strings.Contains(u.Query().Get("scope"), "feedback:create") {
		t.Fatalf("authorization URL %s: want PKCE S256, a resource and the scopes from the 401", authURL)
	}
	reg := p.expect("registered")
	if id, _ := reg["clientId"].(string); !strings.HasPrefix(id, clientID) {
		t.Fatalf("registration: %v, want client_id %s…", reg, clientID)
	}
	name := "OAuth e2e client"
	if strings.HasPrefix(clientID, "https://") {
		name = "CIMD e2e client"
	}
	q := consentInBrowser(t, authURL, got, name, "alice", "Ask you questions")
	if q.Get("iss") != issuer || q.Get("code") == "" || q.Get("state") != u.Query().Get("state") {
		t.Fatalf("authorization response %v: want a code, the state and iss=%s", q, issuer)
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
}

// TestOAuthMCPRemote: mcp-remote in its OAuth mode (DCR, its own loopback
// callback) connects with no token configured and lists the tools, the
// sign-in and consent done in Chromium.
func TestOAuthMCPRemote(t *testing.T) {
	c := startMCPCaddy(t, oauthSites(t, "http", ""))
	port := freePort(t)
	p := runOAuthScript(t, []string{"remote-client.mjs", c.HTTP + "/mcp", fmt.Sprint(port)},
		"MCP_REMOTE_CONFIG_DIR="+t.TempDir(), "BROWSER=true", "DISPLAY=")
	authURL := p.expect("authorize")["url"].(string)
	tab := newTab(t, newBrowser(t), desktop)
	if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Basic " + b64("alice:alice-password")}}); err != nil {
		t.Fatal(err)
	}
	step(t, tab, "consent", chromedp.Navigate(authURL), chromedp.WaitVisible(chromedp.ID("approve")), chromedp.Click(chromedp.ID("approve")))
	if tools := fmt.Sprint(p.expect("tools")["tools"]); !strings.Contains(tools, "interactive_feedback") {
		t.Fatalf("tools through mcp-remote: %s", tools)
	}
	p.finish()
}
