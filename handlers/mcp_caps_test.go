package handlers

import (
	"bufio"
	"context"
	"net/http"
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
