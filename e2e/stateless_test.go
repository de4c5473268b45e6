package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stateless (2026-07-28) client, the official TypeScript SDK v2 from
// e2e/statelessjs, against real Caddy: the elicitation reaches it in an
// input-required result and its retry carries the answer.

var statelessjsDir, _ = filepath.Abs("statelessjs")

func runStatelessClient(t *testing.T, tok string, args ...string) *nodeProc {
	t.Helper()
	if _, err := os.Stat(filepath.Join(statelessjsDir, "node_modules", "@modelcontextprotocol", "client")); err != nil {
		t.Fatalf("e2e/statelessjs/node_modules is missing: run `make deps`")
	}
	return startNode(t, statelessjsDir, []string{"MCP_TOKEN=" + tok}, append([]string{"client.mjs"}, args...)...)
}

func statelessSites(elicitation string) string {
	return `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		elicitation ` + elicitation + `
	}
}
`
}

// TestMCPStatelessClientURL: the input-required result carries the answer
// link (URL mode); the client accepts, retries, and its retry waits until
// the person answers on the page. No MCP session is ever opened.
func TestMCPStatelessClientURL(t *testing.T) {
	c := startMCPCaddy(t, statelessSites("url"))
	p := runStatelessClient(t, token(t, "alice"), "url", c.HTTP+"/mcp")
	if ev := p.expect("connected"); ev["protocolVersion"] != "2026-07-28" || ev["sessionId"] != nil {
		t.Fatalf("connected %v", ev)
	}
	el := p.expect("elicitation")["params"].(map[string]any)
	link, _ := el["url"].(string)
	if el["mode"] != "url" || !strings.Contains(link, "/feedback/") {
		t.Fatalf("elicitation %v", el)
	}
	answer(t, c, link, `{"selectedOptions":["left"]}`)
	res := asResult(t, p.expect("result"))
	if res.IsError || res.Structured["status"] != "submitted" {
		t.Fatalf("result %+v", res)
	}
	p.finish()
}

// TestMCPStatelessClientForm: with `elicitation form` the input-required
// result carries the question's form; the answer in the retry is stored
// (via elicitation) and is the call's result.
func TestMCPStatelessClientForm(t *testing.T) {
	c := startMCPCaddy(t, statelessSites("form"))
	p := runStatelessClient(t, token(t, "alice"), "form", c.HTTP+"/mcp")
	el := p.expect("elicitation")["params"].(map[string]any)
	if el["mode"] != "form" || el["message"] != "Stateless: which one?" {
		t.Fatalf("elicitation %v", el)
	}
	res := asResult(t, p.expect("result"))
	r, _ := res.Structured["result"].(map[string]any)
	if res.IsError || res.Structured["status"] != "submitted" || r == nil || r["freeText"] != "picked in the client" {
		t.Fatalf("result %+v", res)
	}
	p.finish()
	c.waitLog(t, `"via":"elicitation"`)
}

// TestMCPStatelessForgedState: a retry with a requestState that was not
// issued for this identity, or was altered, is refused with 400 and
// -32602 before the tool runs.
func TestMCPStatelessForgedState(t *testing.T) {
	c := startMCPCaddy(t, statelessSites("form"))
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{"form":{}}}}`
	post := func(tok, params string) Response {
		t.Helper()
		return do(t, c.Client, "POST", c.HTTP+"/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback",`+params+`,`+meta+`}}`,
			"Authorization", "Bearer "+tok, "Content-Type", "application/json", "Accept", "application/json, text/event-stream",
			"Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "interactive_feedback")
	}
	args := `"arguments":{"message":"forge?","predefinedOptions":["a","b"],"wait":true}`
	first := post(token(t, "alice"), args)
	i := strings.Index(first.Body, `"requestState":"`)
	if first.Status != http.StatusOK || i < 0 {
		t.Fatalf("first round: %d %s", first.Status, first.Body)
	}
	state := first.Body[i+len(`"requestState":"`):]
	state = state[:strings.IndexByte(state, '"')]
	accept := `"inputResponses":{"answer":{"action":"accept","content":{"answer":"a"}}}`
	for name, tc := range map[string]struct{ tok, state string }{
		"tampered":         {token(t, "alice"), state + "x"},
		"another identity": {token(t, "mallory"), state},
	} {
		r := post(tc.tok, args+`,"requestState":"`+tc.state+`",`+accept)
		if r.Status != http.StatusBadRequest || !strings.Contains(r.Body, "-32602") || !strings.Contains(r.Body, "integrity") {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	// The genuine state, from the identity it was issued to, answers.
	if r := post(token(t, "alice"), args+`,"requestState":"`+state+`",`+accept); r.Status != http.StatusOK || !strings.Contains(r.Body, `submitted`) {
		t.Fatalf("genuine retry: %d %s", r.Status, r.Body)
	}
}
