package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
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

	check := func(when string) {
		for _, m := range []struct {
			name, labels string
			want         float64
		}{
			{"caddy_mcp_feedback_sessions_total", `{event="created"}`, 2},
			{"caddy_mcp_feedback_sessions_total", `{event="submitted"}`, 1},
			{"caddy_mcp_feedback_sessions_pending", "", 1},
			{"caddy_mcp_feedback_time_to_answer_seconds_count", "", 1},
			{"caddy_mcp_feedback_auth_failures_total", `{reason="malformed_token"}`, 1},
		} {
			if got := c.metricValue(t, m.name, m.labels); got != m.want {
				t.Errorf("%s: %s%s = %v, want %v", when, m.name, m.labels, got, m.want)
			}
		}
	}
	check("before reload")
	c.reload(strings.Replace(sites, "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmax_options 5", 1))
	check("after reload")
}
