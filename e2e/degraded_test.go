package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// TestStartsWhileRedisIsDown: a Caddy whose Redis is down at start-up
// loads its configuration (another site in it answers), this module
// answers 503 with Retry-After and /health 503, a reload while Redis is
// still down keeps serving, and once Redis answers the module works
// without a reload.
func TestStartsWhileRedisIsDown(t *testing.T) {
	rs := redistest.Start(t, "--appendfsync", "always")
	rs.Kill() // its address is known and nothing listens there
	sites := redisSites(rs.URL()) + `
http://localhost:{HTTP} {
	respond "the other site" 200
}
`
	c := startCaddy(t, sites)
	alice := token(t, "alice")
	other := strings.Replace(c.HTTP, "127.0.0.1", "localhost", 1)
	check := func(when string) {
		t.Helper()
		if r := do(t, c.Client, "GET", other+"/", ""); r.Status != 200 || r.Body != "the other site" {
			t.Fatalf("%s: the other site: %d %q", when, r.Status, r.Body)
		}
		r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"anyone?"}`, "Authorization", "Bearer "+alice)
		if r.Status != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.Body, "store_unavailable") {
			t.Fatalf("%s: create: %d %s", when, r.Status, r.Body)
		}
		if r := do(t, c.Client, "GET", c.HTTP+"/health", ""); r.Status != 503 {
			t.Fatalf("%s: health: %d %s", when, r.Status, r.Body)
		}
	}
	check("started while Redis is down")
	if !strings.Contains(c.logs.String(), "redis is not reachable") {
		t.Fatal("no warning in the log about Redis being down")
	}
	c.reload(sites)
	check("reloaded while Redis is down")

	rs.Restart(t)
	var r Response
	if !eventually(30*time.Second, func() bool {
		r = do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"anyone?"}`, "Authorization", "Bearer "+alice)
		return r.Status == 201
	}) {
		t.Fatalf("the module never recovered once Redis answered: %d %s", r.Status, r.Body)
	}
	if r := do(t, c.Client, "GET", c.HTTP+"/health", ""); r.Status != 200 {
		t.Fatalf("health after recovery: %d %s", r.Status, r.Body)
	}
}
