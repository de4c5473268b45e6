package e2e

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mark3labs/mcp-go/mcp"
)

// metricValue reads one sample from the admin /metrics endpoint.
func (c *Caddy) metricValue(t *testing.T, name, labels string) float64 {
	t.Helper()
	r := do(t, http.DefaultClient, "GET", fmt.Sprintf("http://127.0.0.1:%d/metrics", c.AdminPort), "")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+labels) + ` (\S+)$`)
	m := re.FindStringSubmatch(r.Body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMetrics: lifecycle counters, auth failures and the time-to-answer
// histogram appear at the admin /metrics endpoint, and keep their values
// across a config reload.
func TestMetrics(t *testing.T) {
	sites := memorySites
	c := newCaddy(t)
	c.Globals = "\tmetrics\n"
	c.start(sites)
	alice := token(t, "alice")
	cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"count me"}`)
	createSession(t, c.Client, c.HTTP, alice, `{"message":"and me"}`)
	if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"ok"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit: %d", r.Status)
	}
	do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"x"}`, "Authorization", "Bearer not-a-jwt")

	created := 2.0
	check := func(when string) {
		for _, m := range []struct {
			name, labels string
			want         float64
		}{
			{"caddy_mcp_feedback_sessions_total", `{event="created"}`, created},
			{"caddy_mcp_feedback_sessions_total", `{event="submitted"}`, 1},
			{"caddy_mcp_feedback_sessions_pending", "", created - 1},
			{"caddy_mcp_feedback_time_to_answer_seconds_count", "", 1},
			{"caddy_mcp_feedback_auth_failures_total", `{reason="malformed_token"}`, 1},
		} {
			if got := c.metricValue(t, m.name, m.labels); got != m.want {
				t.Errorf("%s: %s%s = %v, want %v", when, m.name, m.labels, got, m.want)
			}
		}
	}
	check("before reload")

	// Connections and tool calls: one MCP session and one WebSocket open,
	// one tool call made.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := goMCP(t, ctx, c.HTTP, "http", alice)
	req := mcp.CallToolRequest{}
	req.Params.Name = "check_feedback_status"
	req.Params.Arguments = map[string]any{"sessionId": cr.SessionID}
	if _, err := mc.CallTool(ctx, req); err != nil {
		t.Fatal(err)
	}
	second, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"watched"}`)
	conn, _, err := websocket.Dial(ctx, wsBase(c.HTTP)+"/ws/"+second.SessionID, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + alice}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name, labels string
		want         float64
	}{
		{"caddy_mcp_feedback_mcp_sessions", "", 1},
		{"caddy_mcp_feedback_websockets_open", "", 1},
		{"caddy_mcp_feedback_mcp_tool_calls_total", `{outcome="ok",tool="check_feedback_status"}`, 1},
	} {
		if got := c.metricValue(t, m.name, m.labels); got != m.want {
			t.Errorf("%s%s = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	_ = mc.Close()
	createSession(t, c.Client, c.HTTP, alice, `{"message":"third"}`) // so the pending count below is 2 again after a reload

	created = 4
	c.reload(strings.Replace(sites, "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmax_options 5", 1))
	check("after reload")
}
