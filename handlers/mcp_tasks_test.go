package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// rpcSession is a raw JSON-RPC client of /mcp (one initialized Streamable
// HTTP session), so that the tests see the task methods' exact wire form.
type rpcSession struct {
	t   *testing.T
	e   *mcpEnv
	tok string
	sid string
	n   atomic.Int64 // JSON-RPC ids; calls run from several goroutines
}

func (e *mcpEnv) rpcSession(t *testing.T, sub string) *rpcSession {
	t.Helper()
	s := &rpcSession{t: t, e: e, tok: mint(t, sub)}
	res, hdr := s.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
	if res["result"] == nil {
		t.Fatalf("initialize: %v", res)
	}
	s.sid = hdr.Get("Mcp-Session-Id")
	if s.sid == "" {
		t.Fatal("no session id")
	}
	s.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return s
}

// post sends one message and returns the JSON-RPC answer (from a JSON or
// an SSE body) and the response headers.
func (s *rpcSession) post(body string) (map[string]any, http.Header) {
	s.t.Helper()
	status, res, hdr := s.postStatus(body)
	if status >= 500 {
		s.t.Fatalf("%s: HTTP %d", body, status)
	}
	return res, hdr
}

func (s *rpcSession) postStatus(body string) (int, map[string]any, http.Header) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.e.srv.URL+"/mcp", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.sid != "" {
		req.Header.Set("Mcp-Session-Id", s.sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for _, m := range harness.Events(resp.Body) {
			if m["result"] != nil || m["error"] != nil {
				out = m
			}
		}
	} else {
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &out)
	}
	return resp.StatusCode, out, resp.Header
}

func (s *rpcSession) call(method string, params any) map[string]any {
	s.t.Helper()
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": s.n.Add(1), "method": method, "params": params})
	res, _ := s.post(string(b))
	return res
}

func resultOf(t *testing.T, res map[string]any) map[string]any {
	t.Helper()
	r, ok := res["result"].(map[string]any)
	if !ok {
		t.Fatalf("no result: %v", res)
	}
	return r
}

func errorOf(t *testing.T, res map[string]any) string {
	t.Helper()
	e, ok := res["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error: %v", res)
	}
	return fmt.Sprint(e["code"], " ", e["message"])
}

func TestMCPTasks(t *testing.T) {
	t.Run("lifecycle", testTaskLifecycle)
	t.Run("cancel", testTaskCancel)
	t.Run("wait task", testTaskWait)
	t.Run("isolation", testTaskIsolation)
	t.Run("hostile", testTaskHostile)
	t.Run("status notifications", testTaskNotifications)
	t.Run("calls cap", testTaskCallsCap)
	t.Run("list pages", testTaskListPages)
}

// testTaskListPages: tasks/list pages through every task once, in pages of
// taskListPage with a cursor to the next, and leaves out one that expired.
func testTaskListPages(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	s := e.rpcSession(t, "alice")
	made := map[string]bool{}
	var last string
	for i := range 2*taskListPage + 7 {
		task, _ := s.createTask(map[string]any{"message": fmt.Sprintf("question %d", i)})
		last = task["taskId"].(string)
		made[last] = true
	}
	// One task record gone (its TTL passed) while still in the owner's index.
	if err := e.svc.core.Hub().Records().Delete(t.Context(), kvTask+last); err != nil {
		t.Fatal(err)
	}
	delete(made, last)
	seen, cursor, pages := map[string]bool{}, "", 0
	for {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		page := resultOf(t, s.call("tasks/list", params))
		pages++
		for _, ts := range page["tasks"].([]any) {
			id := ts.(map[string]any)["taskId"].(string)
			if seen[id] || !made[id] {
				t.Fatalf("page %d lists %s again or a task never made / expired", pages, id)
			}
			seen[id] = true
		}
		next, _ := page["nextCursor"].(string)
		if n := len(page["tasks"].([]any)); next != "" && n != taskListPage {
			t.Fatalf("page %d holds %d tasks and has a next cursor", pages, n)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != len(made) || pages != 3 {
		t.Fatalf("listed %d of %d tasks in %d pages", len(seen), len(made), pages)
	}
}

// listener is an MCP client with the server's GET stream open, which
// records the task status notifications it receives.
type listener struct {
	mu   sync.Mutex
	seen []map[string]any
	got  chan map[string]any
}

func (e *mcpEnv) listen(t *testing.T, tok string) *listener {
	t.Helper()
	// The 2025-11-25 GET stream is exactly what is under test here (the
	// notifications of a session), hence the deprecated option.
	//lint:ignore SA1019 a 2025-11-25 session's GET stream is what this test listens on
	tr, err := transport.NewStreamableHTTP(e.srv.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}), transport.WithContinuousListening())
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion("2025-11-25"))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l := &listener{got: make(chan map[string]any, 16)}
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != mcp.MethodNotificationTasksStatus {
			return
		}
		p := n.Params.AdditionalFields
		l.mu.Lock()
		l.seen = append(l.seen, p)
		l.mu.Unlock()
		l.got <- p
	})
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25"
	init.Params.ClientInfo = mcp.Implementation{Name: "listener", Version: "0"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	return l
}

// testTaskNotifications: when a task's question is answered, the owner's
// sessions (not only the one that created the task) get
// notifications/tasks/status; another identity's sessions get nothing.
func testTaskNotifications(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	unsub := e.svc.core.Hub().Subscribe(e.m.TaskEvents(e.svc.core.Hub().Records()))
	t.Cleanup(unsub)
	aliceL, bobL := e.listen(t, mint(t, "alice")), e.listen(t, mint(t, "bob"))
	alice, bob := e.rpcSession(t, "alice"), e.rpcSession(t, "bob")
	task, link := alice.createTask(map[string]any{"message": "notify me"})
	e.submit(link, `{"freeText":"done"}`)
	n := recv(t, aliceL.got, "alice's status notification")
	if n["taskId"] != task["taskId"] || n["status"] != "completed" {
		t.Fatalf("notification %v", n)
	}
	// Bob's own task, answered after Alice's: the notifier works in order,
	// so by the time Bob hears of his, he would have heard of hers.
	btask, blink := bob.createTask(map[string]any{"message": "bob's"})
	e.submit(blink, `{"freeText":"mine"}`)
	if n := recv(t, bobL.got, "bob's status notification"); n["taskId"] != btask["taskId"] {
		t.Fatalf("bob got %v", n)
	}
	bobL.mu.Lock()
	defer bobL.mu.Unlock()
	for _, n := range bobL.seen {
		if n["taskId"] == task["taskId"] {
			t.Fatalf("bob was told of alice's task: %v", n)
		}
	}
}

// testTaskCallsCap: tasks/result holds a connection like a waiting call,
// so it counts towards the subject's cap on calls in flight.
func testTaskCallsCap(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxCallsPerSubject = 1 })
	s := e.rpcSession(t, "alice")
	t1, _ := s.createTask(map[string]any{"message": "one"})
	t2, _ := s.createTask(map[string]any{"message": "two"})
	done := make(chan map[string]any, 1)
	go func() { done <- s.call("tasks/result", map[string]any{"taskId": t1["taskId"]}) }()
	e.waitInFlight(1)
	if msg := errorOf(t, s.call("tasks/result", map[string]any{"taskId": t2["taskId"]})); !strings.Contains(msg, "calls in flight") {
		t.Fatalf("second tasks/result over the cap: %s", msg)
	}
	if got := resultOf(t, s.call("tasks/get", map[string]any{"taskId": t2["taskId"]})); got["status"] != "working" {
		t.Fatalf("tasks/get is not held to the cap: %v", got)
	}
	resultOf(t, s.call("tasks/cancel", map[string]any{"taskId": t1["taskId"]}))
	recv(t, done, "the first tasks/result")
}

func (s *rpcSession) createTask(args map[string]any) (task map[string]any, link string) {
	s.t.Helper()
	res := resultOf(s.t, s.call("tools/call", map[string]any{"name": ToolInteractiveFeedback, "arguments": args, "task": map[string]any{"ttl": 60000}}))
	task, ok := res["task"].(map[string]any)
	if !ok {
		s.t.Fatalf("no task in %v", res)
	}
	say, _ := res["_meta"].(map[string]any)["io.modelcontextprotocol/model-immediate-response"].(string)
	if i := strings.Index(say, "http"); i >= 0 {
		link = say[i:]
	}
	return task, link
}

// testTaskLifecycle: a task-augmented interactive_feedback returns a task
// at once (working, with ttl and pollInterval); tasks/get reports working
// until the person answers; tasks/result, called before the answer,
// blocks and then carries the answer, tied to the task.
func testTaskLifecycle(t *testing.T) {
	obs := &callCounter{n: map[string]int{}}
	e := newMCPEnv(t, store.NewMemory(), func(o *MCPOptions, _ *MCPConfig, _ *validate.Limits) { o.Observer = obs })
	s := e.rpcSession(t, "alice")
	task, link := s.createTask(map[string]any{"message": "ship it?", "predefinedOptions": []string{"yes", "no"}})
	id, _ := task["taskId"].(string)
	if !strings.HasPrefix(id, taskIDPrefix) || task["status"] != "working" || task["pollInterval"] != float64(2000) || task["ttl"] == nil || task["createdAt"] == nil {
		t.Fatalf("created task %v", task)
	}
	if link == "" {
		t.Fatal("the create result does not carry the link to show the user")
	}
	got := resultOf(t, s.call("tasks/get", map[string]any{"taskId": id}))
	if got["status"] != "working" || !strings.Contains(got["statusMessage"].(string), link) {
		t.Fatalf("tasks/get before the answer: %v", got)
	}
	done := make(chan map[string]any, 1)
	go func() { done <- s.call("tasks/result", map[string]any{"taskId": id}) }()
	// tasks/result is waiting (the question is still pending) before the answer comes.
	e.waitInFlight(1)
	e.submit(link, `{"selectedOptions":["yes"]}`)
	r := resultOf(t, recv(t, done, "tasks/result"))
	sc, _ := r["structuredContent"].(map[string]any)
	if sc["status"] != "submitted" || r["_meta"].(map[string]any)[relatedTaskKey].(map[string]any)["taskId"] != id {
		t.Fatalf("tasks/result %v", r)
	}
	if got := resultOf(t, s.call("tasks/get", map[string]any{"taskId": id})); got["status"] != "completed" {
		t.Fatalf("tasks/get after the answer: %v", got)
	}
	list := resultOf(t, s.call("tasks/list", map[string]any{}))
	if ts := list["tasks"].([]any); len(ts) != 1 || ts[0].(map[string]any)["taskId"] != id {
		t.Fatalf("tasks/list %v", list)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.n["interactive_feedback/task"] != 1 {
		t.Fatalf("tool call metrics %v", obs.n)
	}
}

// callCounter records the tool call outcomes the metrics would count.
type callCounter struct {
	nopObserver
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) ToolCall(tool, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[tool+"/"+outcome]++
}

// waitInFlight waits (bounded) until n blocking calls are in flight.
func (e *mcpEnv) waitInFlight(n int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.m.callsMu.Lock()
		got := len(e.m.calls)
		e.m.callsMu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d calls in flight, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testTaskCancel: tasks/cancel withdraws the question; a waiting
// tasks/result ends with the withdrawn outcome, and a second cancel is
// refused because the task is already cancelled.
func testTaskCancel(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	s := e.rpcSession(t, "alice")
	task, link := s.createTask(map[string]any{"message": "cancel me"})
	id := task["taskId"].(string)
	done := make(chan map[string]any, 1)
	go func() { done <- s.call("tasks/result", map[string]any{"taskId": id}) }()
	e.waitInFlight(1)
	got := resultOf(t, s.call("tasks/cancel", map[string]any{"taskId": id}))
	if got["status"] != "cancelled" {
		t.Fatalf("tasks/cancel %v", got)
	}
	r := resultOf(t, recv(t, done, "tasks/result"))
	if r["structuredContent"].(map[string]any)["status"] != "cancelled" {
		t.Fatalf("tasks/result after cancel %v", r)
	}
	if msg := errorOf(t, s.call("tasks/cancel", map[string]any{"taskId": id})); !strings.Contains(msg, "already cancelled") {
		t.Fatalf("second cancel: %s", msg)
	}
	// The person can no longer answer.
	pid, tok := splitLink(t, link)
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/feedback/"+pid+"/submit", strings.NewReader(`{"freeText":"late"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Feedback-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Fatalf("answering a withdrawn question: HTTP %d", resp.StatusCode)
	}
}

// testTaskWait: get_feedback_result as a task completes with the pending
// outcome when its wait runs out, and cancelling a wait task leaves the
// question open.
func testTaskWait(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), shortLimits)
	s := e.rpcSession(t, "alice")
	q := resultOf(t, s.call("tools/call", map[string]any{"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "q"}}))
	qid := q["structuredContent"].(map[string]any)["sessionId"].(string)
	res := resultOf(t, s.call("tools/call", map[string]any{"name": ToolGetFeedbackResult, "arguments": map[string]any{"sessionId": qid, "wait": 1}, "task": map[string]any{}}))
	id := res["task"].(map[string]any)["taskId"].(string)
	r := resultOf(t, s.call("tasks/result", map[string]any{"taskId": id}))
	if r["structuredContent"].(map[string]any)["status"] != "pending" {
		t.Fatalf("wait task result %v", r)
	}
	if got := resultOf(t, s.call("tasks/get", map[string]any{"taskId": id})); got["status"] != "completed" {
		t.Fatalf("wait task after its wait %v", got)
	}
	res = resultOf(t, s.call("tools/call", map[string]any{"name": ToolGetFeedbackResult, "arguments": map[string]any{"sessionId": qid, "wait": 60}, "task": map[string]any{}}))
	id2 := res["task"].(map[string]any)["taskId"].(string)
	if got := resultOf(t, s.call("tasks/cancel", map[string]any{"taskId": id2})); got["status"] != "cancelled" {
		t.Fatalf("cancel wait task %v", got)
	}
	st := resultOf(t, s.call("tools/call", map[string]any{"name": ToolCheckFeedbackStatus, "arguments": map[string]any{"sessionId": qid}}))
	if st["structuredContent"].(map[string]any)["status"] != "pending" {
		t.Fatalf("cancelling a wait task changed the question: %v", st)
	}
}

// testTaskIsolation: another identity's task is invisible to tasks/get,
// tasks/result, tasks/cancel and tasks/list, even with the same token
// issuer; the owner sees it from a second MCP session.
func testTaskIsolation(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	alice := e.rpcSession(t, "alice")
	task, _ := alice.createTask(map[string]any{"message": "mine"})
	id := task["taskId"].(string)
	bob := e.rpcSession(t, "bob")
	for _, m := range []string{"tasks/get", "tasks/result", "tasks/cancel"} {
		if msg := errorOf(t, bob.call(m, map[string]any{"taskId": id})); !strings.Contains(msg, "not found") {
			t.Fatalf("bob %s: %s", m, msg)
		}
	}
	if ts := resultOf(t, bob.call("tasks/list", nil))["tasks"].([]any); len(ts) != 0 {
		t.Fatalf("bob lists %v", ts)
	}
	alice2 := e.rpcSession(t, "alice")
	if got := resultOf(t, alice2.call("tasks/get", map[string]any{"taskId": id})); got["status"] != "working" {
		t.Fatalf("alice's other session: %v", got)
	}
}

// testTaskHostile: malformed task requests get a JSON-RPC error that says
// what was wrong, never a 5xx.
func testTaskHostile(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	s := e.rpcSession(t, "alice")
	cases := []struct {
		name, body, want string
	}{
		{"get without params", `{"jsonrpc":"2.0","id":1,"method":"tasks/get"}`, "taskId"},
		{"get params not object", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":[1]}`, "taskId"},
		{"get empty id", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":""}}`, "taskId"},
		{"get numeric id", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":7}}`, "taskId"},
		{"get foreign id", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"../../etc"}}`, "not a task id"},
		{"get huge id", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"fbt-` + strings.Repeat("A", 5000) + `"}}`, "not a task id"},
		{"get unknown id", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"fbt-AAAA"}}`, "not found"},
		{"result unknown", `{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"taskId":"fbt-ZZZZ"}}`, "not found"},
		{"cancel unknown", `{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":"fbt-ZZZZ"}}`, "not found"},
		{"list bad cursor", `{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"cursor":"x"}}`, "cursor"},
		{"list negative cursor", `{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"cursor":"-5"}}`, "cursor"},
		{"task not object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"x"},"task":5}}`, "params.task"},
		{"task ttl negative", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"x"},"task":{"ttl":-1}}}`, "ttl"},
		{"task ttl text", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"x"},"task":{"ttl":"1"}}}`, "ttl"},
		{"task no name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{},"task":{}}}`, "name"},
		{"task unknown tool", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm -rf","task":{}}}`, "not found"},
		{"task tool without task support", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"cancel_feedback","arguments":{"sessionId":"x"},"task":{}}}`, "cannot run as a task"},
		{"task bad arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":""},"task":{}}}`, "message"},
		{"task arguments not object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback","arguments":[1],"task":{}}}`, "object"},
		{"task unknown argument", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"x","rm":1},"task":{}}}`, "rm"},
		{"wait task unknown question", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_feedback_result","arguments":{"sessionId":"nope"},"task":{}}}`, "no session with this id"},
		{"params not object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"x"}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, res, _ := s.postStatus(c.body)
			if status >= 500 {
				t.Fatalf("HTTP %d", status)
			}
			if c.want == "" {
				if res["error"] == nil && res["result"] == nil {
					t.Fatalf("no answer: %v", res)
				}
				return
			}
			if msg := errorOf(t, res); !strings.Contains(msg, c.want) {
				t.Fatalf("error %q does not mention %q", msg, c.want)
			}
		})
	}
	// Over the legacy SSE transport tasks are refused with a reason.
	req, _ := http.NewRequest("POST", e.srv.URL+"/message?sessionId=x", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tasks/list"}`))
	req.Header.Set("Authorization", "Bearer "+s.tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 || resp.StatusCode < 400 {
		t.Fatalf("tasks over SSE: HTTP %d %s", resp.StatusCode, b)
	}
}
