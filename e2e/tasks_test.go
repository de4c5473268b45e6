package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// MCP Tasks through the official TypeScript SDK's task API
// (e2e/mcpjs/tasks.mjs) against real Caddy processes on a real Redis.

// runTasksClient starts tasks.mjs with the two identities' tokens in the
// environment.
func runTasksClient(t *testing.T, tok, other string, args ...string) *nodeProc {
	t.Helper()
	return startNode(t, mcpjsDir, []string{"MCP_TOKEN=" + tok, "MCP_TOKEN_OTHER=" + other}, append([]string{"tasks.mjs"}, args...)...)
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestMCPTasksAcrossInstances: a task created on instance A is polled,
// listed and read on instance B (same Redis, no shared memory), the
// person's answer through B completes A's polling, another identity sees
// nothing of it, and tasks/cancel on B withdraws the question of a task A
// is polling.
func TestMCPTasksAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	sites := mcpRedisSites(rs.URL())
	a, b := startMCPCaddy(t, sites), startMCPCaddy(t, sites)
	p := runTasksClient(t, token(t, "alice"), token(t, "mallory"), "cluster", a.HTTP+"/mcp", b.HTTP+"/mcp")
	created := p.expect("task")
	task := created["task"].(map[string]any)
	id := task["taskId"].(string)
	if task["status"] != "working" || task["pollInterval"] == nil || task["ttl"] == nil {
		t.Fatalf("created task %v", task)
	}
	seen := p.expect("b-seen")
	if seen["status"] != "working" || !slices.Contains(strs(seen["listed"]), id) {
		t.Fatalf("instance B: %v", seen)
	}
	other := p.expect("other")
	if other["getError"] == nil || other["resultError"] == nil || slices.Contains(strs(other["listed"]), id) {
		t.Fatalf("another identity sees the task: %v", other)
	}
	link := strings.Replace(created["link"].(string), a.HTTP, b.HTTP, 1)
	answer(t, b, link, `{"selectedOptions":["yes"],"freeText":"through B"}`)
	p.proceed()
	res := p.expect("a-result")
	if res["error"] != nil || res["status"] != "submitted" || res["related"] != id {
		t.Fatalf("A's task result: %v", res)
	}
	if r := res["result"].(map[string]any); r["freeText"] != "through B" {
		t.Fatalf("answer %v", r)
	}
	if fromB := p.expect("b-result"); fromB["status"] != "submitted" || fromB["related"] != id {
		t.Fatalf("tasks/result on B: %v", fromB)
	}
	cancelled := p.expect("cancelled")
	if cancelled["status"] != "cancelled" || !strings.Contains(cancelled["streamError"].(string), "cancelled") {
		t.Fatalf("cancel on B: %v", cancelled)
	}
	// The withdrawn question can no longer be answered.
	u, capTok, _ := strings.Cut(cancelled["link"].(string), "#t=")
	qid := u[strings.LastIndex(u, "/")+1:]
	if r := do(t, a.Client, "POST", a.HTTP+"/api/feedback/"+qid+"/submit", `{"freeText":"late"}`, "X-Feedback-Token", capTok); r.Status != 409 && r.Status != 410 {
		t.Fatalf("answering a cancelled task's question: %d %s", r.Status, r.Body)
	}
	p.finish()
}

// TestMCPTasksSurviveReloadAndRestart: a client polling a task keeps
// polling across a `caddy reload` that replaces the configuration and a
// restart of the process (the task lives in Redis, the session id is
// signed), gets the answer, and a reconnected client reads it as well.
func TestMCPTasksSurviveReloadAndRestart(t *testing.T) {
	rs := redistest.Start(t)
	sites := mcpRedisSites(rs.URL())
	c := startMCPCaddy(t, sites)
	p := runTasksClient(t, token(t, "alice"), token(t, "mallory"), "reload", c.HTTP+"/mcp")
	created := p.expect("task")
	id := created["task"].(map[string]any)["taskId"]
	// Another configuration, so the reload really replaces the handlers.
	c.reload(strings.Replace(sites, "jwt_secret {env.JWT_SECRET}\n", "jwt_secret {env.JWT_SECRET}\n\t\tmax_options 7\n", 1))
	c.stop()
	c.start(sites)
	answer(t, c, created["link"].(string), `{"selectedOptions":["no"]}`)
	p.proceed()
	res := p.expect("a-result")
	if res["error"] != nil || res["status"] != "submitted" || res["related"] != id {
		t.Fatalf("after reload and restart: %v", res)
	}
	if again := p.expect("reconnected"); again["taskStatus"] != "completed" || again["status"] != "submitted" || again["related"] != id || again["result"].(map[string]any)["selectedOptions"].([]any)[0] != "no" {
		t.Fatalf("reconnected client: %v", again)
	}
	p.finish()
}
