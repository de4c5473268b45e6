package handlers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// modernClient is mcp-go's client speaking protocol 2026-07-28 (no
// session, capabilities on every request), which answers input-required
// results with its elicitation handler and retries on its own.
func (e *mcpEnv) modernClient(t *testing.T, sub string, caps mcp.ClientCapabilities, h client.ElicitationHandler) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(e.srv.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + mint(t, sub)}))
	if err != nil {
		t.Fatal(err)
	}
	opts := []client.ClientOption{client.WithClientCapabilities(caps)}
	if h != nil {
		opts = append(opts, client.WithElicitationHandler(h))
	}
	c := client.NewClient(tr, opts...)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.ProtocolVersion20260728
	init.Params.ClientInfo = mcp.Implementation{Name: "stateless", Version: "0"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMCPStateless(t *testing.T) {
	t.Run("form", testStatelessForm)
	t.Run("url", testStatelessURL)
	t.Run("no elicitation capability", testStatelessNoCapability)
	t.Run("forged state", testStatelessForgedState)
	t.Run("no 2025 tasks", testStatelessNoTasks)
	t.Run("tasks extension", testTasksExtension)
}

// testStatelessNoTasks: 2026-07-28 requests do not get 2025-11-25 tasks: a
// params.task on tools/call (a field that version lacks) is ignored and the
// call runs as a plain one.
func testStatelessNoTasks(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	s := &rpcSession{t: t, e: e, tok: mint(t, "alice")}
	meta := map[string]any{"io.modelcontextprotocol/protocolVersion": mcp.ProtocolVersion20260728, "io.modelcontextprotocol/clientCapabilities": map[string]any{}}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": map[string]any{
		"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "plain"}, "task": map[string]any{"ttl": 1000}, "_meta": meta}})
	status, res, _ := s.modernPost(string(body))
	if r := resultOf(t, res); status != 200 || r["task"] != nil || r["structuredContent"] == nil {
		t.Fatalf("HTTP %d %v", status, res)
	}
	// Without the tasks extension declared, its methods are refused as the
	// extension says: 400, -32021, naming the capability.
	body, _ = json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": map[string]any{"taskId": "fbt-AAAA", "_meta": meta}})
	status, res, _ = s.modernPost(string(body))
	rpcErr, _ := res["error"].(map[string]any)
	if status != http.StatusBadRequest || rpcErr["code"] != float64(mcp.MISSING_REQUIRED_CLIENT_CAPABILITY) ||
		rpcErr["data"].(map[string]any)["requiredCapabilities"].(map[string]any)["extensions"].(map[string]any)[TasksExtension] == nil {
		t.Fatalf("HTTP %d %v", status, res)
	}
}

// testTasksExtension: a 2026-07-28 client that declares the tasks
// extension gets a task instead of a held request for a waiting call
// (flat CreateTaskResult), reads the answer inlined in tasks/get, and gets
// the extension's answers for cancel, update and the methods it dropped.
func testTasksExtension(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	s := &rpcSession{t: t, e: e, tok: mint(t, "alice")}
	meta := map[string]any{"io.modelcontextprotocol/protocolVersion": mcp.ProtocolVersion20260728,
		"io.modelcontextprotocol/clientCapabilities": map[string]any{"extensions": map[string]any{TasksExtension: map[string]any{}}}}
	post := func(method string, params map[string]any) (int, map[string]any) {
		params["_meta"] = meta
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
		st, res, _ := s.modernPost(string(b))
		return st, res
	}
	status, res := post("tools/call", map[string]any{"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "ext?", "wait": true}})
	created := resultOf(t, res)
	id, _ := created["taskId"].(string)
	if status != 200 || created["resultType"] != "task" || created["task"] != nil || created["result"] != nil || created["status"] != "working" ||
		created["ttlMs"] == nil || created["pollIntervalMs"] != float64(2000) || !strings.HasPrefix(id, taskIDPrefix) {
		t.Fatalf("create: HTTP %d %v", status, res)
	}
	msg, _ := created["statusMessage"].(string)
	link := msg[strings.Index(msg, "http"):strings.Index(msg, " (")]
	if _, res := post("tasks/get", map[string]any{"taskId": id}); resultOf(t, res)["status"] != "working" || resultOf(t, res)["result"] != nil {
		t.Fatalf("tasks/get while working: %v", res)
	}
	e.submit(link, `{"freeText":"inline"}`)
	_, res = post("tasks/get", map[string]any{"taskId": id})
	got := resultOf(t, res)
	r, _ := got["result"].(map[string]any)
	if got["status"] != "completed" || r == nil || r["structuredContent"].(map[string]any)["status"] != "submitted" {
		t.Fatalf("tasks/get after the answer: %v", res)
	}
	// Cancel: an empty ack, even for a finished task; unknown ids are -32602.
	if _, res := post("tasks/cancel", map[string]any{"taskId": id}); resultOf(t, res)["resultType"] != "complete" || len(resultOf(t, res)) != 1 {
		t.Fatalf("tasks/cancel of a finished task: %v", res)
	}
	if st, res := post("tasks/cancel", map[string]any{"taskId": "fbt-NOPE"}); st != 400 || !strings.Contains(errorOf(t, res), "-32602") {
		t.Fatalf("tasks/cancel of an unknown task: HTTP %d %v", st, res)
	}
	if st, res := post("tasks/update", map[string]any{"taskId": id, "inputResponses": map[string]any{}}); st != 400 || !strings.Contains(errorOf(t, res), "does not wait for input") {
		t.Fatalf("tasks/update: HTTP %d %v", st, res)
	}
	for _, m := range []string{"tasks/result", "tasks/list"} {
		if st, res := post(m, map[string]any{"taskId": id}); st != 404 || !strings.Contains(errorOf(t, res), "-32601") {
			t.Fatalf("%s: HTTP %d %v", m, st, res)
		}
	}
	// A working task cancelled: the question is withdrawn, tasks/get says so.
	_, res = post("tools/call", map[string]any{"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "cancel?", "wait": true}})
	id2 := resultOf(t, res)["taskId"].(string)
	post("tasks/cancel", map[string]any{"taskId": id2})
	if _, res := post("tasks/get", map[string]any{"taskId": id2}); resultOf(t, res)["status"] != "cancelled" {
		t.Fatalf("tasks/get after cancel: %v", res)
	}
	// Another identity sees none of it.
	bob := &rpcSession{t: t, e: e, tok: mint(t, "bob")}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": map[string]any{"taskId": id, "_meta": meta}})
	if _, res, _ := bob.modernPost(string(b)); !strings.Contains(errorOf(t, res), "not found") {
		t.Fatalf("bob's tasks/get: %v", res)
	}
	// A call that would not wait is not a task.
	_, res = post("tools/call", map[string]any{"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "no wait"}})
	if r := resultOf(t, res); r["resultType"] == "task" || r["structuredContent"] == nil {
		t.Fatalf("a call without wait: %v", res)
	}
}

// testStatelessForm: with elicitation form, a 2026-07-28 client gets the
// question's form through an input-required result; its retry carries the
// answer, which is stored once (via elicitation) and returned.
func testStatelessForm(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.Elicitation = ElicitationForm })
	var mu sync.Mutex
	var asked []mcp.ElicitationRequest
	c := e.modernClient(t, "alice", mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{Form: &struct{}{}}},
		elicitFunc(func(_ context.Context, r mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
			mu.Lock()
			asked = append(asked, r)
			mu.Unlock()
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept,
				Content: map[string]any{"answer": "green", "comment": "from the form"}}}, nil
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := callTool(ctx, t, c, ToolInteractiveFeedback, map[string]any{"message": "colour?", "predefinedOptions": []string{"red", "green"}, "wait": true}, nil)
	o := outcome(t, res)
	if o.Status != store.StatusSubmitted || o.Result == nil || o.Result.SelectedOptions[0] != "green" || o.Result.FreeText != "from the form" {
		t.Fatalf("outcome %+v", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0].Params.Mode != mcp.ElicitationModeForm || asked[0].Params.Message != "colour?" {
		t.Fatalf("elicitations %+v", asked)
	}
	e.waitLog("mcp: elicitation sent as an input-required result", o.SessionID)
	// One question only: the retry did not ask again.
	st := outcome(t, callTool(ctx, t, c, ToolGetFeedbackResult, map[string]any{"sessionId": o.SessionID}, nil))
	if st.Status != store.StatusSubmitted {
		t.Fatalf("question after the retry: %+v", st)
	}
	if n := e.logs.FilterMessage("mcp: question created").Len(); n != 1 {
		t.Fatalf("%d questions created; the retry must reuse the first", n)
	}
}

// testStatelessURL: in URL mode the input-required result carries the
// answer link; after the client accepts, its retry waits for the person's
// answer on the page.
func testStatelessURL(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	links := make(chan string, 1)
	c := e.modernClient(t, "alice", mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{URL: &struct{}{}}},
		elicitFunc(func(_ context.Context, r mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
			links <- r.Params.URL
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept}}, nil
		}))
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		r, err := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolInteractiveFeedback,
			Arguments: map[string]any{"message": "url?", "wait": true}}})
		if err != nil {
			r = toolError("%v", err)
		}
		done <- r
	}()
	link := recv(t, links, "the URL elicitation")
	if !strings.Contains(link, "/feedback/") || !strings.Contains(link, "#t=") {
		t.Fatalf("elicited URL %q", link)
	}
	e.waitInFlight(1) // the retry is waiting
	e.submit(link, `{"freeText":"on the page"}`)
	if o := outcome(t, recv(t, done, "the result")); o.Status != store.StatusSubmitted || o.Result.FreeText != "on the page" {
		t.Fatalf("outcome %+v", o)
	}
}

// testStatelessNoCapability: a 2026-07-28 client that declared no
// elicitation is not relied on for one: no input-required result, no
// server-to-client request, no log message (it set no logLevel); the call
// just waits and the link is the way to the person.
func testStatelessNoCapability(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), shortLimits)
	s := &rpcSession{t: t, e: e, tok: mint(t, "alice")}
	meta := map[string]any{"io.modelcontextprotocol/protocolVersion": mcp.ProtocolVersion20260728, "io.modelcontextprotocol/clientCapabilities": map[string]any{}}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": map[string]any{
		"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "plain", "timeout": 1}, "_meta": meta}})
	_, created, _ := s.modernPost(string(body))
	sid := resultOf(t, created)["structuredContent"].(map[string]any)["sessionId"].(string)
	body, _ = json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": map[string]any{
		"name": ToolGetFeedbackResult, "arguments": map[string]any{"sessionId": sid, "wait": 1}, "_meta": meta}})
	status, res, frames := s.modernPost(string(body))
	if status != 200 || res["result"] == nil || resultOf(t, res)["resultType"] == "input_required" {
		t.Fatalf("HTTP %d %v", status, res)
	}
	for _, f := range frames {
		if m, _ := f["method"].(string); m != "" && (!strings.HasPrefix(m, "notifications/") || m == "notifications/message") {
			t.Fatalf("server sent %q on the request stream", m)
		}
	}
}

// modernPost sends one 2026-07-28 request (no session) and returns the
// HTTP status, the answer and every frame of the response.
func (s *rpcSession) modernPost(body string) (int, map[string]any, []map[string]any) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.e.srv.URL+"/mcp", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", mcp.ProtocolVersion20260728)
	var p struct {
		Method string `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	_ = json.Unmarshal([]byte(body), &p)
	req.Header.Set("Mcp-Method", p.Method)
	if p.Params.Name != "" {
		req.Header.Set("Mcp-Name", p.Params.Name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	frames := readFrames(s.t, resp)
	var out map[string]any
	for _, f := range frames {
		if f["result"] != nil || f["error"] != nil {
			out = f
		}
	}
	return resp.StatusCode, out, frames
}

// testStatelessForgedState: a retry whose requestState was altered, made
// up, or issued to another identity is refused with -32602 and HTTP 400
// before the tool runs, and answers nothing.
func testStatelessForgedState(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) {
		c.Elicitation = ElicitationForm
		c.StateKey = []byte("0123456789abcdef0123456789abcdef")
	})
	alice := &rpcSession{t: t, e: e, tok: mint(t, "alice")}
	meta := map[string]any{"io.modelcontextprotocol/protocolVersion": mcp.ProtocolVersion20260728,
		"io.modelcontextprotocol/clientCapabilities": map[string]any{"elicitation": map[string]any{"form": map[string]any{}}}}
	call := func(s *rpcSession, state string, responses any) (int, map[string]any) {
		params := map[string]any{"name": ToolInteractiveFeedback, "arguments": map[string]any{"message": "forge?", "predefinedOptions": []string{"a", "b"}, "wait": true}, "_meta": meta}
		if state != "" {
			params["requestState"] = state
			params["inputResponses"] = responses
		}
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params})
		st, res, _ := s.modernPost(string(b))
		return st, res
	}
	_, first := call(alice, "", nil)
	r := resultOf(t, first)
	state, _ := r["requestState"].(string)
	if r["resultType"] != "input_required" || state == "" || r["inputRequests"].(map[string]any)[elicitID] == nil {
		t.Fatalf("first round %v", r)
	}
	accept := map[string]any{elicitID: map[string]any{"action": "accept", "content": map[string]any{"answer": "a"}}}
	body, mac, _ := strings.Cut(strings.TrimPrefix(state, stateVersion), ".")
	raw, _ := json.Marshal(requestState{Question: "other", Tool: ToolInteractiveFeedback, Subject: "alice", Mode: "form", Expires: time.Now().Add(time.Hour).Unix()})
	madeUp := stateVersion + base64.RawURLEncoding.EncodeToString(raw) + "." + mac
	bob := &rpcSession{t: t, e: e, tok: mint(t, "bob")}
	for _, c := range []struct {
		name  string
		s     *rpcSession
		state string
	}{
		{"tampered", alice, state + "-TAMPERED"},
		{"mac flipped", alice, stateVersion + body + "." + strings.Repeat("A", len(mac))},
		{"made up body", alice, madeUp},
		{"no version", alice, body + "." + mac},
		{"huge", alice, stateVersion + strings.Repeat("A", 10000)},
		{"another identity", bob, state},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, res := call(c.s, c.state, accept)
			if status != http.StatusBadRequest || !strings.Contains(errorOf(t, res), "integrity") {
				t.Fatalf("HTTP %d %v", status, res)
			}
		})
	}
	// A retry without the response is asked again, not failed (SEP-2322).
	status, again := call(alice, state, map[string]any{"unrelated": map[string]any{"action": "accept"}})
	if r := resultOf(t, again); status != 200 || r["resultType"] != "input_required" || r["requestState"] == "" {
		t.Fatalf("retry without a response: HTTP %d %v", status, again)
	}
	// The question is still open: nothing was answered with a forged state.
	dec, _ := base64.RawURLEncoding.DecodeString(body)
	var issued requestState
	if err := json.Unmarshal(dec, &issued); err != nil {
		t.Fatal(err)
	}
	c := e.connect("http", alice.tok)
	b, _ := json.Marshal(callTool(context.Background(), t, c, ToolCheckFeedbackStatus, map[string]any{"sessionId": issued.Question}, nil).StructuredContent)
	if !strings.Contains(string(b), `"status":"pending"`) {
		t.Fatalf("question after forged retries: %s", b)
	}
	// The genuine state answers, and a response key it did not ask for is ignored.
	accept["extra"] = map[string]any{"action": "decline"}
	status, done := call(alice, state, accept)
	if sc, _ := resultOf(t, done)["structuredContent"].(map[string]any); status != 200 || sc["status"] != "submitted" {
		t.Fatalf("genuine retry: HTTP %d %v", status, done)
	}
}

// readFrames reads every JSON-RPC message of a JSON or SSE response.
func readFrames(t *testing.T, resp *http.Response) []map[string]any {
	t.Helper()
	var out []map[string]any
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		var m map[string]any
		if json.NewDecoder(resp.Body).Decode(&m) == nil {
			out = append(out, m)
		}
		return out
	}
	return harness.Events(resp.Body)
}
