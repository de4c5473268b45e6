package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// TestMCPSessionBehindLoadBalancer: two instances on one Redis, no sticky
// sessions: a Streamable HTTP session initialized on A serves tool calls
// on B for the same identity; a made-up or another identity's use is 404.
func TestMCPSessionBehindLoadBalancer(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startCaddy(t, redisSites(rs.URL())), startCaddy(t, redisSites(rs.URL()))
	alice := token(t, "alice")
	post := func(base, tok, session, body string) Response {
		t.Helper()
		hdr := []string{"Authorization", "Bearer " + tok, "Content-Type", "application/json", "Accept", "application/json, text/event-stream"}
		if session != "" {
			hdr = append(hdr, "Mcp-Session-Id", session)
		}
		return do(t, a.Client, "POST", base+"/mcp", body, hdr...)
	}
	opened := post(a.HTTP, alice, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"lb","version":"0"}}}`)
	session := opened.Header.Get("Mcp-Session-Id")
	if opened.Status != 200 || session == "" {
		t.Fatalf("initialize on A: %d %s", opened.Status, opened.Body)
	}
	post(a.HTTP, alice, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	cr, _ := createSession(t, a.Client, a.HTTP, alice, `{"message":"which instance?"}`)
	call := fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"check_feedback_status","arguments":{"sessionId":%q}}}`, cr.SessionID)
	if r := post(b.HTTP, alice, session, call); r.Status != http.StatusOK || !strings.Contains(r.Body, `pending`) {
		t.Fatalf("A's session on B: %d %s", r.Status, r.Body)
	}
	if r := post(b.HTTP, token(t, "mallory"), session, call); r.Status != http.StatusNotFound {
		t.Fatalf("A's session on B with another identity: %d %s", r.Status, r.Body)
	}
	if r := post(b.HTTP, alice, "fb1.MADEUP.AAAAAAAAAAAAAAAAAAAAAA", call); r.Status != http.StatusNotFound {
		t.Fatalf("made-up session on B: %d %s", r.Status, r.Body)
	}
}
