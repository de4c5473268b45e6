package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestOAuthWithLoginOIDC: the authorization server on a site whose people
// sign in with an OpenID provider (a real one, oidc-provider), and nothing
// else configured: an MCP client's authorization request sends the person
// to the provider (the login's SignIn), back to the consent page, and the
// tokens it gets act for the person the provider named.
func TestOAuthWithLoginOIDC(t *testing.T) {
	c := newCaddy(t, "OIDC_CLIENT_SECRET=mcpfb-e2e-secret")
	issuer := startOIDCProvider(t, c.HTTP+"/login/callback")
	c.start(fmt.Sprintf(`
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		public_url %s
		login oidc %s {
			client_id mcpfb
			client_secret {env.OIDC_CLIENT_SECRET}
			claim email
			allow alice@example.com
			insecure_loopback_for_tests
		}
	}
}
`, c.HTTP, issuer))
	callback, got := callbackReceiver(t)
	r := do(t, c.Client, "POST", c.HTTP+"/oauth/register", `{"client_name":"OIDC-site client","redirect_uris":["`+callback+`"]}`)
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if json.Unmarshal([]byte(r.Body), &reg) != nil || r.Status != 201 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	verifier := rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {reg.ClientID}, "redirect_uri": {callback}, "state": {"s1"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}, "resource": {c.HTTP + "/mcp"}}

	person := newCookieBrowser(t)
	status, at, body := person.get(t, c.HTTP+"/oauth/authorize?"+q.Encode())
	// The provider's login and consent forms (its development interactions).
	for _, step := range []url.Values{{"prompt": {"login"}, "login": {"alice"}, "password": {"any"}}, {"prompt": {"consent"}}} {
		m := formAction.FindStringSubmatch(body)
		if status != 200 || m == nil || !strings.HasPrefix(at.String(), issuer) {
			t.Fatalf("expected the provider's %s form, got %d at %s: %s", step.Get("prompt"), status, at, tail(body, 500))
		}
		action, err := at.Parse(html.UnescapeString(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		status, at, body = person.post(t, action.String(), step)
	}
	// Back on this site: the consent page, for the person the provider named.
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if status != 200 || at.Path != "/oauth/authorize" || csrf == nil || !strings.Contains(body, "alice@example.com") || !strings.Contains(body, "OIDC-site client") {
		t.Fatalf("after signing in, want the consent page: %d at %s: %s", status, at, tail(body, 800))
	}
	if status, at, _ = person.post(t, c.HTTP+"/oauth/authorize", url.Values{"csrf": {csrf[1]}, "decision": {"approve"}}, "Origin", c.HTTP); at.Path != "/callback" {
		t.Fatalf("approve: %d at %s", status, at)
	}
	var resp url.Values
	select {
	case resp = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback got nothing")
	}
	if resp.Get("iss") != c.HTTP || resp.Get("state") != "s1" || resp.Get("code") == "" {
		t.Fatalf("authorization response: %v", resp)
	}
	tr, err := c.Client.PostForm(c.HTTP+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "client_id": {reg.ClientID},
		"code": {resp.Get("code")}, "redirect_uri": {callback}, "code_verifier": {verifier}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(tr.Body).Decode(&tok)
	tr.Body.Close()
	if err != nil || tr.StatusCode != 200 || tok.AccessToken == "" {
		t.Fatalf("token: %d %v", tr.StatusCode, err)
	}
	if cr := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"whose?"}`, "Authorization", "Bearer "+tok.AccessToken); cr.Status != 201 {
		t.Fatalf("create with the token: %d %s", cr.Status, cr.Body)
	}
	c.waitLog(t, `"msg":"session created"`, `"sub":"alice@example.com"`)
}
