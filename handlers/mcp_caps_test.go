package handlers

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestMCPSessionCapUnderFlood: a flood of concurrent session-creating
// requests from one subject (Streamable initialize POSTs and SSE streams)
// gets exactly the cap, the rest 429 with Retry-After; another subject is
// unaffected, and a closed session frees its slot.
func TestMCPSessionCapUnderFlood(t *testing.T) {
	const limit = 5
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxSessionsPerSubject = limit })
	alice := mint(t, "alice")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var ok, refused atomic.Int32
	var sessions sync.Map
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if i%2 == 0 { // an SSE stream held open until the test ends
				req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/sse", nil)
				req.Header.Set("Authorization", "Bearer "+alice)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("sse: %v", err)
					return
				}
				if resp.StatusCode == http.StatusTooManyRequests {
					refused.Add(1)
					resp.Body.Close()
					return
				}
				// The endpoint event means the session is registered.
				line, _ := bufio.NewReader(resp.Body).ReadString('\n')
				if resp.StatusCode != 200 || !strings.HasPrefix(line, "event: endpoint") {
					t.Errorf("sse: %d %q", resp.StatusCode, line)
				}
				ok.Add(1)
				go func() { <-ctx.Done(); resp.Body.Close() }()
				return
			}
			r := &rpc{t: t, url: e.srv.URL + "/mcp", tok: alice}
			resp := r.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"flood","version":"0"}}}`, nil)
			switch resp.code {
			case 200:
				ok.Add(1)
				sessions.Store(resp.header.Get("Mcp-Session-Id"), true)
			case http.StatusTooManyRequests:
				if resp.header.Get("Retry-After") == "" || !strings.Contains(resp.body, "too_many_sessions") {
					t.Errorf("429 without Retry-After or reason: %v %s", resp.header, resp.body)
				}
				refused.Add(1)
			default:
				t.Errorf("initialize: %d %s", resp.code, resp.body)
			}
		})
	}
	wg.Wait()
	if ok.Load() != limit || refused.Load() != 40-limit {
		t.Fatalf("%d sessions opened and %d refused, want %d and %d", ok.Load(), refused.Load(), limit, 40-limit)
	}
	// Another subject has its own slots.
	e.rawSession(mint(t, "bob"))
	// Ending every session (SSE streams closed, Streamable ones deleted)
	// frees every slot: the cap is available again, exactly.
	cancel()
	sessions.Range(func(k, _ any) bool {
		req, _ := http.NewRequest("DELETE", e.srv.URL+"/mcp", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Mcp-Session-Id", k.(string))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
		return true
	})
	initialize := func() rpcResp {
		r := &rpc{t: t, url: e.srv.URL + "/mcp", tok: alice}
		return r.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"after","version":"0"}}}`, nil)
	}
	deadline := time.Now().Add(10 * time.Second)
	for opened := 0; opened < limit; {
		// SSE streams end asynchronously after their clients leave: poll.
		if got := initialize(); got.code == 200 {
			opened++
		} else if time.Now().After(deadline) {
			t.Fatalf("only %d slots came back: %d %s", opened, got.code, got.body)
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got := initialize(); got.code != http.StatusTooManyRequests {
		t.Fatalf("session %d after the slots came back: %d, want 429", limit+1, got.code)
	}
}

// TestMCPSessionIDsCannotDodgeTheCap: a GET or DELETE without a session id,
// and any request with a made-up or terminated session id, is refused and
// creates nothing, so the per-subject cap counts every session there is.
func TestMCPSessionIDsCannotDodgeTheCap(t *testing.T) {
	const limit = 3
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxSessionsPerSubject = limit })
	alice := mint(t, "alice")
	send := func(method, session, body string) int {
		req, _ := http.NewRequest(method, e.srv.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Content-Type", "application/json")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"check_feedback_status","arguments":{"sessionId":"00000000-0000-4000-8000-000000000000"}}}`
	for i := range 40 {
		if code := send("GET", "", ""); code != http.StatusBadRequest {
			t.Fatalf("GET /mcp without a session #%d: %d, want 400", i, code)
		}
		if code := send("GET", "made-up-"+strings.Repeat("x", i), ""); code != http.StatusNotFound {
			t.Fatalf("GET /mcp with a made-up session: %d, want 404", code)
		}
		if code := send("POST", "00000000-0000-4000-8000-00000000000"+string(rune('a'+i%6)), call); code != http.StatusNotFound {
			t.Fatalf("POST /mcp with a made-up session: %d, want 404", code)
		}
	}
	if n := e.m.Sessions(); n != 0 {
		t.Fatalf("%d sessions exist after refused requests, want 0", n)
	}
	// A terminated session id is as unknown as a made-up one.
	r := e.rawSession(alice)
	if code := send("DELETE", r.session, ""); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	if code := send("POST", r.session, call); code != http.StatusNotFound {
		t.Fatalf("POST with a terminated session: %d, want 404", code)
	}
	// The cap still holds exactly.
	for range limit {
		e.rawSession(alice)
	}
	rr := &rpc{t: t, url: e.srv.URL + "/mcp", tok: alice}
	if got := rr.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"0"}}}`, nil); got.code != http.StatusTooManyRequests {
		t.Fatalf("initialize past the cap: %d, want 429", got.code)
	}
}

// TestMCPCallsPerSubjectCap: waiting tool calls of one subject are capped;
// the next gets a clear tool error, and another subject is unaffected.
func TestMCPCallsPerSubjectCap(t *testing.T) {
	const limit = 2
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxCallsPerSubject = limit })
	alice := mint(t, "alice")
	r := e.rawSession(alice)
	id, _ := create(t, e.svc, alice, `{"message":"Q"}`)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for i := range limit {
		wg.Go(func() {
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"get_feedback_result","arguments":{"sessionId":%q,"wait":300}}}`, 100+i, id)
			req, _ := http.NewRequestWithContext(ctx, "POST", r.url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+alice)
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Mcp-Session-Id", r.session)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	// Both waits are in flight once the server counts them (bounded: a
	// server that never counts them fails here rather than spinning).
	deadline := time.Now().Add(10 * time.Second)
	for !e.callsInFlight(store.Owner{Subject: "alice"}, limit) {
		if time.Now().After(deadline) {
			t.Fatalf("the server never counted %d calls in flight", limit)
		}
		runtime.Gosched()
	}
	isErr, msg, _ := r.callRaw(ToolCheckFeedbackStatus, fmt.Sprintf(`{"sessionId":%q}`, id))
	if !isErr || !strings.Contains(msg, "tool calls in flight") {
		t.Fatalf("call past the cap: isError %v %q", isErr, msg)
	}
	bob := e.rawSession(mint(t, "bob"))
	if isErr, msg, _ := bob.callRaw(ToolCheckFeedbackStatus, fmt.Sprintf(`{"sessionId":%q}`, id)); !isErr || !strings.Contains(msg, "not yours") {
		t.Fatalf("another subject: isError %v %q, want its own not-found answer", isErr, msg)
	}
	cancel()
	wg.Wait()
}

// callsInFlight reports whether owner has n tool calls in flight.
func (e *mcpEnv) callsInFlight(owner store.Owner, n int) bool {
	e.m.callsMu.Lock()
	defer e.m.callsMu.Unlock()
	return e.m.callsBy[owner] == n
}

// TestMCPSessionAcrossInstances: a Streamable HTTP session opened on one
// instance is served by another that shares the site's secret (no sticky
// sessions), for the same identity only; a forged signed id is unknown.
func TestMCPSessionAcrossInstances(t *testing.T) {
	st := store.NewMemory()
	key := func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) {
		c.SessionKey = []byte("0123456789abcdef0123456789abcdef")
	}
	a, b := newMCPEnv(t, st, key), newMCPEnv(t, st, key)
	alice := mint(t, "alice")
	onA := a.rawSession(alice)
	if !strings.HasPrefix(onA.session, sessionIDPrefix) {
		t.Fatalf("session id %q is not signed", onA.session)
	}
	id, _ := create(t, a.svc, alice, `{"message":"Q"}`)
	onB := &rpc{t: t, url: b.srv.URL + "/mcp", tok: alice, session: onA.session}
	if isErr, msg, rpcErr := onB.callRaw(ToolCheckFeedbackStatus, fmt.Sprintf(`{"sessionId":%q}`, id)); isErr || rpcErr {
		t.Fatalf("A's session on B: isError %v rpc %v %q", isErr, rpcErr, msg)
	}
	post := func(url, tok, session string) int {
		r := &rpc{t: t, url: url, tok: tok, session: session}
		return r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"check_feedback_status","arguments":{"sessionId":%q}}}`, id), nil).code
	}
	if code := post(b.srv.URL+"/mcp", mint(t, "mallory"), onA.session); code != http.StatusNotFound {
		t.Fatalf("A's session on B with another identity's token: %d, want 404", code)
	}
	nonce, _, _ := strings.Cut(strings.TrimPrefix(onA.session, sessionIDPrefix), ".")
	if code := post(b.srv.URL+"/mcp", alice, sessionIDPrefix+nonce+".AAAAAAAAAAAAAAAAAAAAAA"); code != http.StatusNotFound {
		t.Fatalf("forged session id: %d, want 404", code)
	}
	if code := post(b.srv.URL+"/mcp", mint(t, "alice"), onA.session); code != http.StatusOK {
		t.Fatalf("A's session on B with another token of the same identity: %d, want 200", code)
	}
}

// TestMCPWithholdLink: with link_to_agent off, interactive_feedback tells
// the agent the session id and never the capability link, in its text or
// its structured result.
func TestMCPWithholdLink(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	e.svc.cfg.WithholdLink = true
	r := e.rawSession(mint(t, "alice"))
	r.id++
	resp := r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"Pay the invoice?"}}}`, r.id), nil)
	if resp.code != http.StatusOK || !strings.Contains(resp.body, "sessionId") || strings.Contains(resp.body, "#t=") ||
		strings.Contains(resp.body, "feedbackUrl") || strings.Contains(resp.body, "/feedback/") {
		t.Fatalf("interactive_feedback with the link withheld: %d %s", resp.code, resp.body)
	}
}
