package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// TestOAuthBehindLoadBalancer: two instances of one login-only site (one
// public_url, no jwt_secret) on one Redis act as one: an access token
// issued by A works on B, an MCP session opened on A continues on B (the
// session-id key both share is kept in the store, since there is no
// secret to derive it from), and a revocation at B ends the token on A.
func TestOAuthBehindLoadBalancer(t *testing.T) {
	rs := redistest.Start(t)
	sites := func(public string) string {
		s := strings.Replace(oauthSites(t, "http", ""), "public_url http://127.0.0.1:{HTTP}", "public_url "+public, 1)
		return strings.Replace(s, "login caddy", "login caddy\n\t\tstore redis "+rs.URL()+" {\n\t\t\tkey_prefix e2eoauthlb:\n\t\t}", 1)
	}
	a := newCaddy(t)
	a.start(sites(a.HTTP))
	b := startCaddy(t, sites(a.HTTP)) // the same site: A's public URL
	clientID, tok := oauthByHTTP(t, a.HTTP, "feedback:create feedback:read")
	access := tok["access_token"].(string)

	post := func(base, session, body string) Response {
		t.Helper()
		hdr := []string{"Authorization", "Bearer " + access, "Content-Type", "application/json", "Accept", "application/json, text/event-stream"}
		if session != "" {
			hdr = append(hdr, "Mcp-Session-Id", session)
		}
		return do(t, a.Client, "POST", base+"/mcp", body, hdr...)
	}
	opened := post(a.HTTP, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"lb","version":"0"}}}`)
	session := opened.Header.Get("Mcp-Session-Id")
	if opened.Status != 200 || session == "" {
		t.Fatalf("initialize on A: %d %s", opened.Status, opened.Body)
	}
	post(a.HTTP, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"which instance?"}}}`
	if r := post(b.HTTP, session, call); r.Status != http.StatusOK || !strings.Contains(r.Body, "pending") {
		t.Fatalf("A's session and token on B: %d %s", r.Status, r.Body)
	}
	rv, err := b.Client.PostForm(b.HTTP+"/oauth/revoke", url.Values{"token": {access}, "client_id": {clientID}})
	if err != nil {
		t.Fatal(err)
	}
	rv.Body.Close()
	if r := post(a.HTTP, session, call); rv.StatusCode != 200 || r.Status != http.StatusUnauthorized {
		t.Fatalf("revoked at B (%d), then A answers %d %s", rv.StatusCode, r.Status, r.Body)
	}
}
