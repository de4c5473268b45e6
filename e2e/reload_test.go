package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// goMCP connects an mcp-go client over /mcp ("http") or /sse ("sse").
func goMCP(t *testing.T, ctx context.Context, base, kind, tok string) *client.Client {
	t.Helper()
	hdr := map[string]string{"Authorization": "Bearer " + tok}
	var c *client.Client
	var err error
	if kind == "sse" {
		c, err = client.NewSSEMCPClient(base+"/sse", client.WithHeaders(hdr))
	} else {
		c, err = client.NewStreamableHttpClient(base+"/mcp", transport.WithHTTPHeaders(hdr))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("%s start: %v", kind, err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25" // what the TS SDK and today's clients negotiate
	init.Params.ClientInfo = mcp.Implementation{Name: "e2e-reload", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("%s initialize: %v", kind, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitAnswer blocks in get_feedback_result until the session is answered
// and returns the free text of the answer.
func waitAnswer(ctx context.Context, c *client.Client, id string) (string, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "get_feedback_result"
	req.Params.Arguments = map[string]any{"sessionId": id, "wait": 240}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(res.StructuredContent)
	var out struct {
		Status string
		Result struct{ FreeText string }
	}
	if err := json.Unmarshal(b, &out); err != nil || res.IsError || out.Status != "submitted" {
		return "", fmt.Errorf("get_feedback_result: %s (isError %v)", b, res.IsError)
	}
	return out.Result.FreeText, nil
}

// TestReloadsUnderLiveConnections: twenty config reloads while agents wait
// over /mcp and /sse and WebSocket watchers listen. Waiting calls live on
// (their MCP sessions are pooled), watchers are closed with 1012 and
// reconnect, every answer given afterwards reaches every waiter, and the
// process's goroutines come back to where they were.
func TestReloadsUnderLiveConnections(t *testing.T) {
	rs := redistest.Start(t)
	sites := redisSites(rs.URL())
	c := startCaddy(t, sites)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := token(t, "alice")
	base := c.goroutines(t)

	const perKind = 4
	type waiter struct {
		id, capTok string
		done       chan error
	}
	var waiters []waiter
	var clients []*client.Client
	for _, kind := range []string{"http", "sse"} {
		mc := goMCP(t, ctx, c.HTTP, kind, alice)
		clients = append(clients, mc)
		for i := range perKind {
			cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"reload `+kind+fmt.Sprint(i)+`"}`)
			w := waiter{cr.SessionID, capTok, make(chan error, 1)}
			go func() {
				got, err := waitAnswer(ctx, mc, w.id)
				if err == nil && got != "answer "+w.id {
					err = fmt.Errorf("waiter of %s got %q", w.id, got)
				}
				w.done <- err
			}()
			waiters = append(waiters, w)
		}
	}
	// Watchers reconnect whenever the server restarts their socket.
	var wg sync.WaitGroup
	watched := make(chan string, perKind)
	for i := range perKind {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"watch `+fmt.Sprint(i)+`"}`)
		waiters = append(waiters, waiter{cr.SessionID, capTok, nil})
		wg.Go(func() {
			restarts := 0
			for ctx.Err() == nil {
				conn, _, err := websocket.Dial(ctx, wsBase(c.HTTP)+"/ws/"+cr.SessionID, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + alice}}})
				if err != nil {
					time.Sleep(20 * time.Millisecond) // the server is being replaced; dial again
					continue
				}
				for {
					_, msg, err := conn.Read(ctx)
					if err != nil {
						if websocket.CloseStatus(err) == websocket.StatusServiceRestart {
							restarts++
						}
						break
					}
					// The answer, live or (after a reconnect) as the state on connect.
					if strings.Contains(string(msg), `"feedback_submitted"`) || strings.Contains(string(msg), `"status":"submitted"`) {
						conn.Close(websocket.StatusNormalClosure, "")
						watched <- fmt.Sprintf("%s after %d restarts", cr.SessionID, restarts)
						return
					}
				}
			}
		})
	}
	for i := range 20 {
		c.reload(strings.Replace(sites, "jwt_secret {env.JWT_SECRET}", fmt.Sprintf("jwt_secret {env.JWT_SECRET}\n\t\tmax_options %d", 5+i%2), 1))
	}
	// Every question answered now reaches its waiter. (Keep-alive
	// connections of the replaced servers were closed; a client retries.)
	c.Client.CloseIdleConnections()
	for _, w := range waiters {
		if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+w.id+"/submit", fmt.Sprintf(`{"freeText":"answer %s"}`, w.id), "X-Feedback-Token", w.capTok); r.Status != 200 {
			t.Fatalf("submit after reloads: %d %s", r.Status, r.Body)
		}
	}
	for _, w := range waiters {
		if w.done == nil {
			continue
		}
		select {
		case err := <-w.done:
			if err != nil {
				t.Errorf("waiting call after 20 reloads: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("a waiting call never got its answer")
		}
	}
	for range perKind {
		select {
		case s := <-watched:
			t.Logf("watcher %s", s)
		case <-ctx.Done():
			t.Fatal("a watcher never saw the answer")
		}
	}
	wg.Wait()
	for _, mc := range clients {
		_ = mc.Close()
	}
	c.Client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	// Goroutines return to about the baseline: nothing per reload, per call
	// or per socket is left behind (a bounded readiness poll, not a sleep).
	var g int
	if !eventually(20*time.Second, func() bool { g = c.goroutines(t); return g <= base+10 }) {
		t.Fatalf("goroutines: %d at start, %d after 20 reloads and every connection closed", base, g)
	}
	t.Logf("goroutines: %d at start, %d after 20 reloads with %d waiting calls and %d watchers", base, g, 2*perKind, perKind)
}

// TestSigtermWithOpenStreams: with calls waiting over /mcp and /sse and a
// watcher open, SIGTERM ends the process well within its grace period.
func TestSigtermWithOpenStreams(t *testing.T) {
	c := startCaddy(t, memorySites)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice := token(t, "alice")
	ended := make(chan error, 2)
	for _, kind := range []string{"http", "sse"} {
		mc := goMCP(t, ctx, c.HTTP, kind, alice)
		cr, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"shutdown `+kind+`"}`)
		go func() { _, err := waitAnswer(ctx, mc, cr.SessionID); ended <- err }()
	}
	cr, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"watch"}`)
	conn, _, err := websocket.Dial(ctx, wsBase(c.HTTP)+"/ws/"+cr.SessionID, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + alice}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil { // connection_established: the watch is open
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("caddy did not exit after SIGTERM")
	}
	took := time.Since(start)
	if c.exitErr != nil {
		t.Fatalf("caddy exited with %v", c.exitErr)
	}
	if !strings.Contains(c.logs.String(), `"exit_code":0`) {
		t.Fatalf("no clean shutdown in the log:\n%s", tail(c.logs.String(), 2000))
	}
	t.Logf("SIGTERM with 2 waiting MCP calls and 1 watcher open: exited in %v (grace period 5s)", took.Round(time.Millisecond))
}
