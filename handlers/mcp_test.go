package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// mcpEnv is the MCP endpoints of one Service on an httptest server, with
// the REST submit endpoint beside them so that tests answer as a person
// would.
type mcpEnv struct {
	t    testing.TB
	svc  *Service
	m    *MCP
	srv  *httptest.Server
	logs *observer.ObservedLogs
}

type envOption func(*MCPOptions, *MCPConfig, *validate.Limits)

func newMCPEnv(t testing.TB, st store.Store, opts ...envOption) *mcpEnv {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	v, err := auth.NewVerifier(testSecret, "", "")
	if err != nil {
		t.Fatal(err)
	}
	mo, mc, lim := MCPOptions{Logger: zap.New(core)}, MCPConfig{}, validate.DefaultLimits()
	for _, o := range opts {
		o(&mo, &mc, &lim)
	}
	e := &mcpEnv{t: t, logs: logs}
	e.svc = New(Config{
		Core: newCore(t, st, feedback.Config{Limits: lim}), Verifier: v,
		BaseURL: func(*http.Request) string { return e.srv.URL }, Logger: zap.New(core),
	})
	e.m = NewMCP(mo)
	ep := e.m.Endpoints(e.svc, mc)
	mux := http.NewServeMux()
	mux.Handle("/mcp", ep.Streamable)
	mux.Handle("/sse", ep.SSE)
	mux.Handle("/message", ep.Message)
	mux.Handle("/api/feedback/{id}/submit", Methods(e.svc.Submit, http.MethodPost))
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		// Streams first, so the server's Close does not wait on them.
		e.m.Close()
		e.srv.Close()
		_ = st.Close()
	})
	return e
}

func shortLimits(o *MCPOptions, c *MCPConfig, l *validate.Limits) {
	l.MinTimeout = time.Second
}

// connect opens an MCP client over kind ("http" or "sse") as sub.
func (e *mcpEnv) connect(kind, tok string, copts ...client.ClientOption) *client.Client {
	e.t.Helper()
	hdr := map[string]string{"Authorization": "Bearer " + tok}
	var tr transport.Interface
	var err error
	if kind == "sse" {
		tr, err = transport.NewSSE(e.srv.URL+"/sse", transport.WithHeaders(hdr))
	} else {
		tr, err = transport.NewStreamableHTTP(e.srv.URL+"/mcp", transport.WithHTTPHeaders(hdr))
	}
	if err != nil {
		e.t.Fatal(err)
	}
	// The 2025-11-25 handshake, as the TS SDK and today's clients speak it.
	c := client.NewClient(tr, append([]client.ClientOption{client.WithProtocolVersion("2025-11-25")}, copts...)...)
	// The SSE stream lives as long as the context given to Start.
	if err := c.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25"
	init.Params.ClientInfo = mcp.Implementation{Name: "handlers-test", Version: "0"}
	if _, err := c.Initialize(ctx, init); err != nil {
		e.t.Fatalf("initialize over %s: %v", kind, err)
	}
	return c
}

func callTool(ctx context.Context, t testing.TB, c *client.Client, name string, args any, progressToken any) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	if progressToken != nil {
		req.Params.Meta = &mcp.Meta{ProgressToken: progressToken}
	}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func text(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func outcome(t testing.TB, r *mcp.CallToolResult) Outcome {
	t.Helper()
	if r.IsError {
		t.Fatalf("tool error: %s", text(r))
	}
	b, _ := json.Marshal(r.StructuredContent)
	var o Outcome
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("structuredContent %s: %v", b, err)
	}
	return o
}

// submit answers like the person's page does, with the link's token.
func (e *mcpEnv) submit(link, body string) {
	e.t.Helper()
	id, tok := splitLink(e.t, link)
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/feedback/"+id+"/submit", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Feedback-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		e.t.Fatalf("submit: %d %s", resp.StatusCode, b)
	}
}

func splitLink(t testing.TB, link string) (id, tok string) {
	t.Helper()
	u, frag, ok := strings.Cut(link, "#t=")
	if !ok {
		t.Fatalf("link %q has no token", link)
	}
	return u[strings.LastIndex(u, "/")+1:], frag
}

// recv takes one value from ch, or fails the test after 20 s: a test that
// waits on a server must not hang the whole run when the server is wrong.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// progressWatch collects progress notifications a client receives.
type progressWatch struct {
	mu    sync.Mutex
	msgs  []string
	first chan string
	once  sync.Once
}

func watchProgress(c *client.Client) *progressWatch {
	p := &progressWatch{first: make(chan string, 1)}
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		msg, _ := n.Params.AdditionalFields["message"].(string)
		p.mu.Lock()
		p.msgs = append(p.msgs, msg)
		p.mu.Unlock()
		p.once.Do(func() { p.first <- msg })
	})
	return p
}

// waitLog waits until the server logged msg with a field containing want.
func (e *mcpEnv) waitLog(msg, want string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, le := range e.logs.FilterMessage(msg).All() {
			for _, f := range le.Context {
				if strings.Contains(f.String, want) {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("no log %q with %q; logs: %v", msg, want, e.logs.All())
}

// TestMCP runs the MCP tests and then checks that every goroutine they
// started (servers, clients, waits, elicitations) is gone again.
func TestMCP(t *testing.T) {
	runtime.GC()
	base := runtime.NumGoroutine()
	for _, kind := range []string{"http", "sse"} {
		t.Run(kind+"/ask then read", func(t *testing.T) { testAskThenRead(t, kind) })
		t.Run(kind+"/wait with progress", func(t *testing.T) { testWaitProgress(t, kind) })
		t.Run(kind+"/client disconnects mid-wait", func(t *testing.T) { testDisconnect(t, kind) })
		t.Run(kind+"/bad input", func(t *testing.T) { testBadToolInput(t, kind) })
	}
	// mcp-go's Go client sends no notifications/cancelled over HTTP
	// transports; on /mcp the dropped POST is the cancel. The TS client's
	// cancel over both transports is in e2e/mcp_test.go.
	t.Run("http/client cancels a wait", func(t *testing.T) { testClientCancel(t, "http") })
	t.Run("tools are described", testToolDefinitions)
	t.Run("timeout is a result", testTimeoutIsResult)
	t.Run("short wait and cancel", testShortWaitAndCancel)
	t.Run("auth and session binding", testAuthAndBinding)
	t.Run("origin check", testOriginCheck)
	t.Run("url elicitation", testURLElicitation)
	t.Run("form elicitation", testFormElicitation)
	t.Run("elicitation off", testElicitationOff)
	t.Run("idle sessions swept, busy ones kept", testIdleSweep)
	t.Run("shutdown ends waits with a result", testShutdown)
	t.Run("2026-07-28 client", testModernClient)

	waitGoroutines(t, base, "the MCP tests")
}

// waitGoroutines polls (bounded) until no more goroutines run than base,
// the count before what: nothing it started is left behind.
func waitGoroutines(t *testing.T, base int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after %s, %d before:\n%s", n, what, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testToolDefinitions(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	c := e.connect("http", mint(t, "alice"))
	res, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][4]bool{ // readOnly, destructive, idempotent, openWorld
		ToolInteractiveFeedback: {false, false, false, true},
		ToolGetFeedbackResult:   {true, false, true, false},
		ToolCheckFeedbackStatus: {true, false, true, false},
		ToolCancelFeedback:      {false, true, true, false},
	}
	if len(res.Tools) != len(want) {
		t.Fatalf("%d tools, want %d", len(res.Tools), len(want))
	}
	for _, tool := range res.Tools {
		w, ok := want[tool.Name]
		if !ok {
			t.Fatalf("unexpected tool %q", tool.Name)
		}
		a := tool.Annotations
		if tool.Description == "" || a.Title == "" || a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
			t.Fatalf("%s: description or annotations missing: %+v", tool.Name, a)
		}
		if got := [4]bool{*a.ReadOnlyHint, *a.DestructiveHint, *a.IdempotentHint, *a.OpenWorldHint}; got != w {
			t.Errorf("%s hints %v, want %v", tool.Name, got, w)
		}
		raw, _ := json.Marshal(tool.OutputSchema)
		if len(tool.RawOutputSchema) > 0 {
			raw = tool.RawOutputSchema
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s output schema: %v", tool.Name, err)
		}
		comp := jsonschema.NewCompiler()
		if err := comp.AddResource("out.json", doc); err != nil {
			t.Fatal(err)
		}
		if _, err := comp.Compile("out.json"); err != nil || !strings.Contains(string(raw), `"sessionId"`) {
			t.Fatalf("%s output schema %s does not compile: %v", tool.Name, raw, err)
		}
	}
}

func testAskThenRead(t *testing.T, kind string) {
	e := newMCPEnv(t, store.NewMemory())
	c := e.connect(kind, mint(t, "alice"))
	ctx := context.Background()
	res := callTool(ctx, t, c, ToolInteractiveFeedback, map[string]any{"message": "Ship it?", "predefinedOptions": []string{"yes", "no"}}, nil)
	o := outcome(t, res)
	if o.Status != store.StatusPending || !strings.HasPrefix(o.FeedbackURL, e.srv.URL+"/feedback/"+o.SessionID+"#t=") {
		t.Fatalf("create outcome %+v", o)
	}
	if tx := text(res); !strings.Contains(tx, o.FeedbackURL) || !strings.Contains(tx, "get_feedback_result") {
		t.Fatalf("text twin %q lacks the link or the next step", tx)
	}
	st := callTool(ctx, t, c, ToolCheckFeedbackStatus, map[string]any{"sessionId": o.SessionID}, nil)
	if st.IsError || !strings.Contains(text(st), "pending") {
		t.Fatalf("status: %s", text(st))
	}
	e.submit(o.FeedbackURL, `{"selectedOptions":["yes"],"freeText":"go"}`)
	got := outcome(t, callTool(ctx, t, c, ToolGetFeedbackResult, map[string]any{"sessionId": o.SessionID}, nil))
	if got.Status != store.StatusSubmitted || got.Result == nil || got.Result.SelectedOptions[0] != "yes" || got.Result.FreeText != "go" || got.FeedbackURL != "" {
		t.Fatalf("result %+v", got)
	}
}

func testWaitProgress(t *testing.T, kind string) {
	e := newMCPEnv(t, store.NewMemory())
	c := e.connect(kind, mint(t, "alice"))
	prog := watchProgress(c)
	type ret struct {
		r   *mcp.CallToolResult
		err error
	}
	done := make(chan ret, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = ToolInteractiveFeedback
		req.Params.Arguments = map[string]any{"message": "Wait for me", "wait": true}
		req.Params.Meta = &mcp.Meta{ProgressToken: "p1"}
		r, err := c.CallTool(context.Background(), req)
		done <- ret{r, err}
	}()
	var msg string
	select {
	case msg = <-prog.first:
	case r := <-done:
		t.Fatalf("returned before progress: %v %v", r.r, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no progress notification")
	}
	link := msg[strings.Index(msg, "http"):strings.Index(msg, " (")]
	e.submit(link, `{"freeText":"here I am"}`)
	r := recv(t, done, "the result")
	if r.err != nil {
		t.Fatal(r.err)
	}
	o := outcome(t, r.r)
	if o.Status != store.StatusSubmitted || o.Result.FreeText != "here I am" || !strings.Contains(text(r.r), "here I am") {
		t.Fatalf("outcome %+v / %q", o, text(r.r))
	}
	e.waitLog("mcp: stopped waiting", "submitted")
}

func testClientCancel(t *testing.T, kind string) {
	e := newMCPEnv(t, store.NewMemory())
	c := e.connect(kind, mint(t, "alice"))
	o := outcome(t, callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "cancel me"}, nil))
	prog := watchProgress(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
			Arguments: map[string]any{"sessionId": o.SessionID, "wait": 600}, Meta: &mcp.Meta{ProgressToken: 7}}})
		done <- err
	}()
	recv(t, prog.first, "progress")
	cancel()
	if err := recv(t, done, "the cancelled call"); err == nil {
		t.Fatal("cancelled call returned no error")
	}
	e.waitLog("mcp: stopped waiting", "client went away")
	// The question is still open and answerable.
	e.submit(o.FeedbackURL, `{"freeText":"late but fine"}`)
}

func testDisconnect(t *testing.T, kind string) {
	e := newMCPEnv(t, store.NewMemory())
	c := e.connect(kind, mint(t, "alice"))
	o := outcome(t, callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "bye?"}, nil))
	prog := watchProgress(c)
	go func() {
		_, _ = c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
			Arguments: map[string]any{"sessionId": o.SessionID, "wait": 600}, Meta: &mcp.Meta{ProgressToken: 8}}})
	}()
	recv(t, prog.first, "progress")
	_ = c.Close()
	e.waitLog("mcp: stopped waiting", "client went away")
	e.submit(o.FeedbackURL, `{"freeText":"still answerable"}`)
}

func testTimeoutIsResult(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), shortLimits)
	c := e.connect("http", mint(t, "alice"))
	res := callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "anyone?", "timeout": 1, "wait": true}, nil)
	o := outcome(t, res)
	if o.Status != store.StatusExpired || !strings.Contains(text(res), "away") || !strings.Contains(text(res), "do not ask") {
		t.Fatalf("timeout: %+v %q", o, text(res))
	}
}

func testShortWaitAndCancel(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	alice := mint(t, "alice")
	c := e.connect("http", alice)
	ctx := context.Background()
	o := outcome(t, callTool(ctx, t, c, ToolInteractiveFeedback, map[string]any{"message": "later"}, nil))
	// A wait shorter than the question's life ends pending, saying so.
	res := callTool(ctx, t, c, ToolGetFeedbackResult, map[string]any{"sessionId": o.SessionID, "wait": 1}, nil)
	if got := outcome(t, res); got.Status != store.StatusPending || got.FeedbackURL != o.FeedbackURL || !strings.Contains(text(res), "again") {
		t.Fatalf("short wait: %+v %q", got, text(res))
	}
	// cancel_feedback wakes a waiter on another session with "cancelled".
	other := e.connect("sse", alice)
	done := make(chan *mcp.CallToolResult, 1)
	prog := watchProgress(other)
	go func() {
		r, _ := other.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
			Arguments: map[string]any{"sessionId": o.SessionID, "wait": 600}, Meta: &mcp.Meta{ProgressToken: "x"}}})
		done <- r
	}()
	if msg := recv(t, prog.first, "progress"); !strings.Contains(msg, o.SessionID) {
		t.Fatalf("progress from another MCP session names neither link nor id: %q", msg)
	}
	cr := callTool(ctx, t, c, ToolCancelFeedback, map[string]any{"sessionId": o.SessionID}, nil)
	if cr.IsError || !strings.Contains(text(cr), "withdrawn") {
		t.Fatalf("cancel: %q", text(cr))
	}
	if got := outcome(t, recv(t, done, "the waiter")); got.Status != store.StatusCancelled {
		t.Fatalf("waiter saw %+v", got)
	}
	if again := callTool(ctx, t, c, ToolCancelFeedback, map[string]any{"sessionId": o.SessionID}, nil); again.IsError {
		t.Fatalf("second cancel: %q", text(again))
	}
}

// testShutdown: a process exit ends waiting calls on both transports with
// a result, and the SSE stream is closed only after it carried it.
func testShutdown(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	var dones []chan *mcp.CallToolResult
	for _, kind := range []string{"http", "sse"} {
		c := e.connect(kind, mint(t, "alice"))
		prog := watchProgress(c)
		done := make(chan *mcp.CallToolResult, 1)
		go func() {
			r, _ := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolInteractiveFeedback,
				Arguments: map[string]any{"message": "restart?", "wait": true}, Meta: &mcp.Meta{ProgressToken: 1}}})
			done <- r
		}()
		recv(t, prog.first, "progress")
		dones = append(dones, done)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.m.Shutdown(ctx)
	for _, done := range dones {
		r := recv(t, done, "the result")
		if r == nil || r.IsError || !strings.Contains(text(r), "restarting") || outcome(t, r).Status != store.StatusPending {
			t.Fatalf("result on shutdown: %+v", r)
		}
	}
}

// rpc is a raw JSON-RPC client, for what the SDK clients will not send.
type rpc struct {
	t       testing.TB
	url     string
	tok     string
	session string
	id      int
}

func (e *mcpEnv) rawSession(tok string) *rpc {
	r := &rpc{t: e.t, url: e.srv.URL + "/mcp", tok: tok}
	resp := r.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`, nil)
	if resp.code != 200 {
		e.t.Fatalf("initialize: %d %s", resp.code, resp.body)
	}
	r.session = resp.header.Get("Mcp-Session-Id")
	if r.session == "" {
		e.t.Fatal("no Mcp-Session-Id")
	}
	r.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil)
	return r
}

type rpcResp struct {
	code   int
	header http.Header
	body   string
}

func (r *rpc) post(body string, hdr map[string]string) rpcResp {
	r.t.Helper()
	req, _ := http.NewRequest("POST", r.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if r.tok != "" {
		req.Header.Set("Authorization", "Bearer "+r.tok)
	}
	if r.session != "" {
		req.Header.Set("Mcp-Session-Id", r.session)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// An SSE-framed answer: keep the last data line (the response).
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		var last string
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				last = strings.TrimSpace(d)
			}
		}
		b = []byte(last)
	}
	return rpcResp{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// callRaw sends tools/call with args written verbatim into the envelope and
// returns the tool result (isError, text) or the JSON-RPC error message.
func (r *rpc) callRaw(tool, args string) (isError bool, msg string, rpcErr bool) {
	r.t.Helper()
	r.id++
	resp := r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, r.id, tool, args), nil)
	var m struct {
		Result *struct {
			IsError bool `json:"isError"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(resp.body), &m); err != nil {
		r.t.Fatalf("%s(%.60s): HTTP %d, body %.300q is not JSON-RPC", tool, args, resp.code, resp.body)
	}
	if m.Error != nil {
		return false, m.Error.Message, true
	}
	if m.Result == nil || len(m.Result.Content) == 0 {
		r.t.Fatalf("%s: empty result %s", tool, resp.body)
	}
	return m.Result.IsError, m.Result.Content[0].Text, false
}

// testBadToolInput sends the REST API's create corpus as tool arguments
// and expects the REST API's words back, as a tool error. Bodies that are
// not one JSON value cannot be arguments; those must fail as JSON-RPC
// errors, without a panic.
func testBadToolInput(t *testing.T, kind string) {
	e := newMCPEnv(t, store.NewMemory())
	alice := mint(t, "alice")
	r := e.rawSession(alice)
	for _, c := range createCorpus() {
		if c.ctype != "" {
			continue // content types are a transport matter
		}
		rest := e.svc.do(t, e.svc.Create, call{method: "POST", body: c.body, headers: bearer(alice)})
		var eb errorBody
		_ = json.Unmarshal(rest.Body.Bytes(), &eb)
		isErr, msg, rpcErr := r.callRaw(ToolInteractiveFeedback, c.body)
		// Bodies that are not one JSON value Go can decode cannot be sent
		// as arguments: mcp-go rejects the whole message.
		var v any
		embeddable := json.Unmarshal([]byte(c.body), &v) == nil && !strings.Contains(c.body, "\xff")
		// The tool also takes wait, and no arguments at all (null) means {}.
		want := strings.Replace(eb.Error.Message, "theme, lang", "theme, lang, wait", 1)
		if c.body == "null" {
			want = "message is required"
		}
		switch {
		case !embeddable:
			if !rpcErr && !isErr {
				t.Errorf("%s: accepted: %s", c.name, msg)
			}
		case rest.Code == http.StatusRequestEntityTooLarge:
			if !isErr || !strings.Contains(msg, "64 KiB") {
				t.Errorf("%s: %v %q, want the 64 KiB error", c.name, isErr, msg)
			}
		case !isErr || msg != want:
			t.Errorf("%s: tool said (isError %v) %q; REST said %q", c.name, isErr, msg, eb.Error.Message)
		}
	}
	// Arguments that are not an object.
	for _, args := range []string{`[1]`, `"hi"`, `42`, `true`} {
		if isErr, msg, rpcErr := r.callRaw(ToolInteractiveFeedback, args); !isErr && !rpcErr {
			t.Errorf("arguments %s accepted: %s", args, msg)
		}
	}
	// The same API words through the SDK transport of this kind.
	c := e.connect(kind, alice)
	res := callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "hi", "timeout": "300"}, nil)
	if !res.IsError || text(res) != "timeout must be a whole number of seconds (from 30 to 3600)" {
		t.Errorf("wrong type over %s: %q", kind, text(res))
	}

	// The session tools.
	mine := outcome(t, callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "mine"}, nil)).SessionID
	bobs := outcome(t, callTool(context.Background(), t, e.connect(kind, mint(t, "bob")), ToolInteractiveFeedback, map[string]any{"message": "bob's"}, nil)).SessionID
	notFound := "no session with this id exists, or it is not yours"
	cases := []struct{ args, want string }{
		{`{}`, "sessionId is required"},
		{`null`, "sessionId is required"},
		{`{"sessionId":null}`, "sessionId is required"},
		{`{"sessionId":42}`, "sessionId must be a string"},
		{`{"sessionId":["x"]}`, "sessionId must be a string"},
		{`{"sessionId":""}`, notFound},
		{`{"sessionId":"not-a-uuid"}`, notFound},
		{`{"sessionId":"../../etc/passwd"}`, notFound},
		{`{"sessionId":"` + strings.ToUpper(mine) + `"}`, notFound},
		{`{"sessionId":"` + strings.Repeat("a", 10000) + `"}`, notFound},
		{`{"sessionId":"123e4567-e89b-12d3-a456-426614174000"}`, notFound},
		{`{"sessionId":"` + bobs + `"}`, notFound},
		{`{"sessionId":"` + mine + `","extra":1}`, `unknown field "extra"`},
		{`{"sessionId":"` + mine + `","sessionId":"` + mine + `"}`, "appears twice"},
		{`{"SessionID":"` + mine + `"}`, `unknown field "SessionID"`},
	}
	for _, tool := range []string{ToolGetFeedbackResult, ToolCheckFeedbackStatus, ToolCancelFeedback} {
		for _, c := range cases {
			if isErr, msg, _ := r.callRaw(tool, c.args); !isErr || !strings.Contains(msg, c.want) {
				t.Errorf("%s(%.80s): isError %v %q, want %q", tool, c.args, isErr, msg, c.want)
			}
		}
	}
	waitMsg := "wait must be a whole number of seconds from 0 to 3600"
	for _, w := range []string{`-1`, `1.5`, `"10"`, `true`, `3601`, `1e9`, `99999999999999999999`, `{}`} {
		if isErr, msg, _ := r.callRaw(ToolGetFeedbackResult, `{"sessionId":"`+mine+`","wait":`+w+`}`); !isErr || msg != waitMsg {
			t.Errorf("wait %s: %v %q", w, isErr, msg)
		}
	}
	if isErr, msg, _ := r.callRaw(ToolCheckFeedbackStatus, `{"sessionId":"`+mine+`","wait":5}`); !isErr || !strings.Contains(msg, `unknown field "wait"`) {
		t.Errorf("wait on check_feedback_status: %v %q", isErr, msg)
	}
	if isErr, msg, _ := r.callRaw(ToolInteractiveFeedback, `{"message":"hi","wait":"yes"}`); !isErr || msg != "wait must be true or false" {
		t.Errorf("wait string: %v %q", isErr, msg)
	}
	if _, msg, rpcErr := r.callRaw("no_such_tool", `{}`); !rpcErr || !strings.Contains(msg, "no_such_tool") {
		t.Errorf("unknown tool: %q", msg)
	}
	// Scopes: a create-only token may ask but not wait or read.
	scoped := e.rawSession(mint(t, "alice", auth.ScopeCreate))
	if isErr, msg, _ := scoped.callRaw(ToolInteractiveFeedback, `{"message":"hi","wait":true}`); !isErr || !strings.Contains(msg, auth.ScopeRead) {
		t.Errorf("wait with create-only scope: %v %q", isErr, msg)
	}
	if isErr, msg, _ := scoped.callRaw(ToolGetFeedbackResult, `{"sessionId":"`+mine+`"}`); !isErr || !strings.Contains(msg, auth.ScopeRead) {
		t.Errorf("read with create-only scope: %v %q", isErr, msg)
	}
	// The JSON-RPC message itself is capped.
	if resp := r.post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"message":"`+strings.Repeat("a", 300<<10)+`"}}}`, nil); resp.code != 413 || !strings.Contains(resp.body, "256 KiB") {
		t.Errorf("huge message: %d %s", resp.code, resp.body)
	}
}

func testAuthAndBinding(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	for _, path := range []string{"/mcp", "/sse", "/message?sessionId=x"} {
		method := "POST"
		if path == "/sse" {
			method = "GET"
		}
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") || !strings.Contains(string(b), "Authorization: Bearer") {
			t.Errorf("%s %s without a token: %d %q %s", method, path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
		}
	}
	alice := e.rawSession(mint(t, "alice"))
	// Bob's valid token on Alice's session is refused.
	bob := *alice
	bob.tok = mint(t, "bob")
	if resp := bob.post(`{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, nil); resp.code != 403 || !strings.Contains(resp.body, "session_forbidden") {
		t.Errorf("bob on alice's session: %d %s", resp.code, resp.body)
	}
	// Alice's token expiring mid-session: the next request says so.
	expired, err := auth.Mint(testSecret, auth.TokenOptions{Subject: "alice", TTL: time.Minute, Now: time.Now().Add(-2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	late := *alice
	late.tok = expired
	if resp := late.post(`{"jsonrpc":"2.0","id":6,"method":"tools/list"}`, nil); resp.code != 401 || !strings.Contains(resp.body, "expired") {
		t.Errorf("expired token mid-session: %d %s", resp.code, resp.body)
	}
	if resp := alice.post(`{"jsonrpc":"2.0","id":7,"method":"tools/list"}`, nil); resp.code != 200 {
		t.Errorf("alice on her session: %d %s", resp.code, resp.body)
	}
	// The same binding on legacy SSE: Bob cannot post to Alice's stream.
	c := e.connect("sse", mint(t, "alice"))
	_ = c
	var sid string
	e.m.sessions.Range(func(k, v any) bool {
		if v.(*mcpSession).sse {
			sid = k.(string)
		}
		return true
	})
	req, _ := http.NewRequest("POST", e.srv.URL+"/message?sessionId="+sid, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+mint(t, "bob"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if sid == "" || resp.StatusCode != 403 || !strings.Contains(string(b), "session_forbidden") {
		t.Errorf("bob on alice's SSE session %q: %d %s", sid, resp.StatusCode, b)
	}
}

func testOriginCheck(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	r := &rpc{t: t, url: e.srv.URL + "/mcp", tok: mint(t, "alice")}
	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`
	if resp := r.post(init, map[string]string{"Origin": "http://evil.example.com", "Host": "evil.example.com"}); resp.code != 403 || !strings.Contains(resp.body, "origin_not_allowed") {
		t.Errorf("rebinding origin: %d %s", resp.code, resp.body)
	}
	if resp := r.post(init, map[string]string{"Origin": e.srv.URL}); resp.code != 200 {
		t.Errorf("loopback origin: %d %s", resp.code, resp.body)
	}
	if resp := r.post(init, nil); resp.code != 200 {
		t.Errorf("no origin: %d %s", resp.code, resp.body)
	}
}

type elicitFunc func(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error)

func (f elicitFunc) Elicit(ctx context.Context, r mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return f(ctx, r)
}

// urlElicitCall connects mcp-go's client, declaring URL elicitation and
// accepting every one (each goes to got), and starts a waiting
// interactive_feedback asking message; elicitation/complete ids go to
// complete, the call's result to done.
func urlElicitCall(t *testing.T, e *mcpEnv, message string) (got chan mcp.ElicitationParams, complete chan string, done chan *mcp.CallToolResult) {
	t.Helper()
	got = make(chan mcp.ElicitationParams, 1)
	c := e.connect("http", mint(t, "alice"),
		client.WithClientCapabilities(mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{URL: &struct{}{}}}),
		client.WithElicitationHandler(elicitFunc(func(_ context.Context, r mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
			got <- r.Params
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept}}, nil
		})))
	complete = make(chan string, 1)
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/elicitation/complete" {
			id, _ := n.Params.AdditionalFields["elicitationId"].(string)
			complete <- id
		}
	})
	done = make(chan *mcp.CallToolResult, 1)
	go func() {
		r, _ := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolInteractiveFeedback,
			Arguments: map[string]any{"message": message, "wait": true}}})
		done <- r
	}()
	return got, complete, done
}

func testURLElicitation(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	got, complete, done := urlElicitCall(t, e, "Open me")
	p := recv(t, got, "the elicitation")
	if p.Mode != mcp.ElicitationModeURL || !strings.Contains(p.URL, "/feedback/") || !strings.Contains(p.URL, "#t=") || p.ElicitationID == "" {
		t.Fatalf("elicitation %+v", p)
	}
	e.submit(p.URL, `{"freeText":"opened and answered"}`)
	if o := outcome(t, recv(t, done, "the result")); o.Status != store.StatusSubmitted {
		t.Fatalf("outcome %+v", o)
	}
	select {
	case id := <-complete:
		if id != p.ElicitationID {
			t.Fatalf("completed %q, want %q", id, p.ElicitationID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no elicitation/complete notification")
	}
}

func testFormElicitation(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.Elicitation = ElicitationForm })
	c := e.connect("http", mint(t, "alice"),
		client.WithClientCapabilities(mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{Form: &struct{}{}}}),
		client.WithElicitationHandler(elicitFunc(func(_ context.Context, r mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
			if r.Params.Message != "Deploy now?" {
				return nil, fmt.Errorf("unexpected form %+v", r.Params)
			}
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{
				Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"answer": "later", "comment": "after lunch"}}}, nil
		})))
	res := callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "Deploy now?", "predefinedOptions": []string{"yes", "later"}, "wait": true}, nil)
	o := outcome(t, res)
	if o.Status != store.StatusSubmitted || o.Result.SelectedOptions[0] != "later" || o.Result.FreeText != "after lunch" {
		t.Fatalf("form answer: %+v", o)
	}
}

func testIdleSweep(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(o *MCPOptions, _ *MCPConfig, _ *validate.Limits) { o.IdleTTL = time.Second })
	alice := mint(t, "alice")
	idle := e.rawSession(alice)
	busy := e.connect("http", alice)
	o := outcome(t, callTool(context.Background(), t, busy, ToolInteractiveFeedback, map[string]any{"message": "long one"}, nil))
	prog := watchProgress(busy)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		r, _ := busy.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
			Arguments: map[string]any{"sessionId": o.SessionID, "wait": 600}, Meta: &mcp.Meta{ProgressToken: 2}}})
		done <- r
	}()
	recv(t, prog.first, "progress")
	// The idle session goes once the TTL has passed; sweeps run every
	// second, and the busy one must survive them.
	deadline := time.Now().Add(10 * time.Second)
	for e.m.session(idle.session) != nil {
		if time.Now().After(deadline) {
			t.Fatal("idle session never swept")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.waitLog("mcp: idle session closed", "")
	if e.m.Sessions() != 1 {
		t.Fatalf("%d sessions left; the one with a call in flight must stay", e.m.Sessions())
	}
	e.submit(o.FeedbackURL, `{"freeText":"after the sweep"}`)
	if got := outcome(t, recv(t, done, "the result")); got.Status != store.StatusSubmitted {
		t.Fatalf("busy call: %+v", got)
	}
}

// testModernClient: a client of the stateless 2026-07-28 protocol (no
// initialize, no session) asks, waits with progress and reads the answer.
func testModernClient(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	tr, err := transport.NewStreamableHTTP(e.srv.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + mint(t, "alice")}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "modern", Version: "0"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	o := outcome(t, callTool(ctx, t, c, ToolInteractiveFeedback, map[string]any{"message": "modern?"}, nil))
	prog := watchProgress(c)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		r, _ := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
			Arguments: map[string]any{"sessionId": o.SessionID, "wait": 60}, Meta: &mcp.Meta{ProgressToken: "m"}}})
		done <- r
	}()
	recv(t, prog.first, "progress")
	e.submit(o.FeedbackURL, `{"freeText":"yes"}`)
	if got := outcome(t, recv(t, done, "the result")); got.Status != store.StatusSubmitted {
		t.Fatalf("modern client result %+v", got)
	}
}

// testElicitationOff: with elicitation off, a client that could take one
// gets none; the link in the progress message is the way to the person.
func testElicitationOff(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.Elicitation = ElicitationOff })
	var asked sync.Mutex
	n := 0
	c := e.connect("http", mint(t, "alice"),
		client.WithClientCapabilities(mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{URL: &struct{}{}, Form: &struct{}{}}}),
		client.WithElicitationHandler(elicitFunc(func(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
			asked.Lock()
			n++
			asked.Unlock()
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionDecline}}, nil
		})))
	prog := watchProgress(c)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		r, _ := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolInteractiveFeedback,
			Arguments: map[string]any{"message": "no popups", "predefinedOptions": []string{"a", "b"}, "wait": true}, Meta: &mcp.Meta{ProgressToken: 3}}})
		done <- r
	}()
	msg := recv(t, prog.first, "progress")
	e.submit(msg[strings.Index(msg, "http"):strings.Index(msg, " (")], `{"selectedOptions":["a"]}`)
	if o := outcome(t, recv(t, done, "the result")); o.Status != store.StatusSubmitted {
		t.Fatalf("outcome %+v", o)
	}
	asked.Lock()
	defer asked.Unlock()
	if n != 0 {
		t.Fatalf("%d elicitations sent with elicitation off", n)
	}
}

func TestCheckOrigin(t *testing.T) {
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	public := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 443}
	allowed := []string{"https://app.example.com"}
	for _, c := range []struct {
		origin string
		local  net.Addr
		want   bool
	}{
		{"", loop, true},                              // not a browser
		{"http://localhost:8080", loop, true},         // a local page
		{"http://127.0.0.1:6274", loop, true},         // e.g. the Inspector's web UI
		{"http://[::1]:3000", loop, true},             // IPv6 loopback
		{"http://evil.example.com", loop, false},      // a rebound name
		{"null", loop, false},                         // sandboxed or file: page
		{"https://app.example.com", loop, true},       // allowed_origins
		{"HTTPS://APP.EXAMPLE.COM", loop, true},       // case-insensitive
		{"https://app.example.com.evil", loop, false}, // no prefix match
		{"http://evil.example.com", public, true},     // public listener: the JWT decides
	} {
		r := httptest.NewRequest("POST", "/mcp", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, c.local))
		if got := checkOrigin(r, allowed); got != c.want {
			t.Errorf("Origin %q on %v: %v, want %v", c.origin, c.local, got, c.want)
		}
	}
}
