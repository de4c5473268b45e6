package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// askOverMCP calls interactive_feedback without waiting and returns the
// session id and the answer link.
func askOverMCP(t *testing.T, ctx context.Context, c interface {
	CallTool(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error)
}, message string) (string, string) {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = "interactive_feedback"
	req.Params.Arguments = map[string]any{"message": message}
	res, err := c.CallTool(ctx, req)
	if err != nil || res.IsError {
		t.Fatalf("interactive_feedback: %v %+v", err, res)
	}
	b, _ := json.Marshal(res.StructuredContent)
	var out struct{ SessionID, FeedbackURL string }
	if err := json.Unmarshal(b, &out); err != nil || out.SessionID == "" || !strings.Contains(out.FeedbackURL, "#t=") {
		t.Fatalf("interactive_feedback result %s", b)
	}
	return out.SessionID, out.FeedbackURL
}

// TestOneSystemAcrossInstances: three instances on one Redis behave as one
// system. The agent asks on A and waits on A over /mcp and /sse; the person
// opens the page and its live socket on B; the answer is submitted on C;
// every waiter hears of it.
func TestOneSystemAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	a, b, c := startCaddy(t, redisSites(rs.URL())), startCaddy(t, redisSites(rs.URL())), startCaddy(t, redisSites(rs.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := token(t, "alice")
	agent := goMCP(t, ctx, a.HTTP, "http", alice)
	id, link := askOverMCP(t, ctx, agent, "Ship the release?")
	_, capTok, _ := strings.Cut(link, "#t=")

	results := make(chan string, 2)
	for _, kind := range []string{"http", "sse"} {
		mc := agent
		if kind == "sse" {
			mc = goMCP(t, ctx, a.HTTP, "sse", alice)
		}
		go func() {
			got, err := waitAnswer(ctx, mc, id)
			if err != nil {
				got = kind + ": " + err.Error()
			}
			results <- got
		}()
	}
	// The person's page on B: the view, and its live socket.
	r := do(t, b.Client, "POST", b.HTTP+"/feedback/"+id+"/view", `{"token":"`+capTok+`"}`)
	if r.Status != 200 || !strings.Contains(r.Body, "Ship the release?") {
		t.Fatalf("page view on B: %d %s", r.Status, r.Body)
	}
	page := watchAsPage(t, b, b.HTTP, id, capTok)
	// The answer through C.
	if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+id+"/submit", `{"freeText":"ship it"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit on C: %d %s", r.Status, r.Body)
	}
	for range 2 {
		select {
		case got := <-results:
			if got != "ship it" {
				t.Fatalf("agent waiting on A got %q", got)
			}
		case <-ctx.Done():
			t.Fatal("the agent waiting on A never heard of the answer given on C")
		}
	}
	expectSubmitted(t, page, id, "ship it")
}

// TestWaitersRideOutRedisOutage: an agent waiting over /mcp on A and an
// app watching over the WebSocket on B keep waiting through a Redis kill -9
// and restart, and both see the answer given after recovery.
func TestWaitersRideOutRedisOutage(t *testing.T) {
	// fsync on every write: Redis is killed with -9 soon after the create.
	rs := redistest.Start(t, "--appendfsync", "always")
	a, b := startCaddy(t, redisSites(rs.URL())), startCaddy(t, redisSites(rs.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := token(t, "alice")
	cr, capTok := createSession(t, a.Client, a.HTTP, alice, `{"message":"still there?"}`)
	agent := goMCP(t, ctx, a.HTTP, "http", alice)
	answer := make(chan string, 1)
	go func() {
		got, err := waitAnswer(ctx, agent, cr.SessionID)
		if err != nil {
			got = err.Error()
		}
		answer <- got
	}()
	watcher, _, err := websocket.Dial(ctx, wsBase(b.HTTP)+"/ws/"+cr.SessionID, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + alice}}})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.CloseNow()
	if _, _, err := watcher.Read(ctx); err != nil { // connection_established
		t.Fatal(err)
	}

	rs.Kill()
	if !eventually(30*time.Second, func() bool { return do(t, a.Client, "GET", a.HTTP+"/health", "").Status == 503 }) {
		t.Fatal("the outage never showed in /health")
	}
	rs.Restart(t)
	var r Response
	eventually(30*time.Second, func() bool {
		r = do(t, b.Client, "POST", b.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"after the outage","nonce":"n1"}`, "X-Feedback-Token", capTok)
		return r.Status != 503 // retry only while the store is unavailable
	})
	if r.Status != 200 {
		t.Fatalf("submit after Redis came back: %d %s", r.Status, r.Body)
	}
	select {
	case got := <-answer:
		if got != "after the outage" {
			t.Fatalf("agent got %q", got)
		}
	case <-ctx.Done():
		t.Fatal("the waiting agent never got the answer given after the outage")
	}
	for {
		_, msg, err := watcher.Read(ctx)
		if err != nil {
			t.Fatalf("watcher: %v", err)
		}
		if strings.Contains(string(msg), `"feedback_submitted"`) {
			if !strings.Contains(string(msg), "after the outage") {
				t.Fatalf("watcher saw %s", msg)
			}
			break
		}
	}
}
