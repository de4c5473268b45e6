package handlers

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// heldStream is one tools/call on its own HTTP/1.1 connection, written and
// read by hand, so that tests see the bytes a held call sends (framing,
// headers, events) and can drop the connection at will.
type heldStream struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	resp *http.Response
	body *bufio.Reader
}

// openHeld posts msg (a JSON-RPC message) to e's /mcp in session sid as
// tok, and reads the response head.
func openHeld(t testing.TB, e *mcpEnv, tok, sid, msg string) *heldStream {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"+
		"Authorization: Bearer %s\r\nMcp-Session-Id: %s\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n\r\n%s",
		strings.TrimPrefix(e.srv.URL, "http://"), tok, sid, len(msg), msg)
	h := &heldStream{t: t, conn: conn, br: bufio.NewReader(conn)}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	h.resp, err = http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("reading the response head: %v", err)
	}
	h.body = bufio.NewReader(h.resp.Body)
	return h
}

// event reads the next SSE event's data (one JSON-RPC message).
func (h *heldStream) event() map[string]any {
	h.t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	m, err := harness.NextEvent(h.body)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// end reads to the end of the body and reports that the server closed the
// connection after it.
func (h *heldStream) end() {
	h.t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if rest, err := io.ReadAll(h.body); err != nil || strings.TrimSpace(string(rest)) != "" {
		h.t.Fatalf("after the last event: %q, %v (want a clean end of body)", rest, err)
	}
	if n, err := h.br.Read(make([]byte, 1)); err != io.EOF {
		h.t.Fatalf("connection not closed after the response: %d bytes, %v", n, err)
	}
}

func getResultMsg(id int, sessionID string, wait int, progress string) string {
	meta := ""
	if progress != "" {
		meta = fmt.Sprintf(`,"_meta":{"progressToken":%q}`, progress)
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"get_feedback_result","arguments":{"sessionId":%q,"wait":%d}%s}}`,
		id, sessionID, wait, meta)
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// callsInFlight is the number of tool calls the MCP counts against caps.
func (m *MCP) callsInFlight() int {
	m.callsMu.Lock()
	defer m.callsMu.Unlock()
	n := 0
	for _, c := range m.callsBy {
		n += c
	}
	return n
}

// askRaw creates a question through the tool and returns its id and link.
func askRaw(t testing.TB, r *rpc, msg string) Outcome {
	t.Helper()
	r.id++
	resp := r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":%q}}}`, r.id, msg), nil)
	var m struct {
		Result struct {
			StructuredContent Outcome `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(resp.body), &m); err != nil || m.Result.StructuredContent.SessionID == "" {
		t.Fatalf("interactive_feedback: %s", resp.body)
	}
	return m.Result.StructuredContent
}

// BenchmarkMCPHeldCall reports what one waiting get_feedback_result costs
// the server (stack and heap in use after a GC, goroutines), held calls
// counted once their first progress arrived. Memory store: the Redis
// store's subscription goroutine per watched question is not counted.
//
//	go test -run '^$' -bench MCPHeldCall -benchtime 500x ./handlers/
func BenchmarkMCPHeldCall(b *testing.B) {
	e := newMCPEnv(b, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxCallsPerSubject = b.N + 1 })
	tok := mint(b, "alice")
	r := e.rawSession(tok)
	qs := make([]Outcome, b.N)
	for i := range qs {
		qs[i] = askRaw(b, r, fmt.Sprint("held ", i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	b.ResetTimer()
	streams := make([]*heldStream, b.N)
	for i := range streams {
		streams[i] = openHeld(b, e, tok, r.session, getResultMsg(1000+i, qs[i].SessionID, 600, fmt.Sprint("p", i)))
		streams[i].event()
	}
	b.StopTimer()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := float64(b.N)
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/call")
	b.ReportMetric((float64(after.HeapInuse)-float64(before.HeapInuse))/n, "heap-B/call")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/call")
	b.ReportMetric(float64(e.m.Held())/n, "held/call")
}

// TestMCPHeld: a waiting call on HTTP/1.1 is held off its request
// (mcp_held.go). The wire is read by hand, so that what the client gets is
// seen byte for byte; every way a held call ends is tried, and at the end
// no goroutine of theirs is left.
func TestMCPHeld(t *testing.T) {
	runtime.GC()
	base := runtime.NumGoroutine()
	t.Run("answer with progress, the ordinary path's result", testHeldAnswer)
	t.Run("wait elapses", testHeldDeadline)
	t.Run("progress keeps coming", testHeldProgressTicks)
	t.Run("client disconnects", testHeldDisconnect)
	t.Run("notifications/cancelled", testHeldCancelled)
	t.Run("session DELETE", testHeldDelete)
	t.Run("shutdown", testHeldShutdown)
	t.Run("HTTP/2 keeps the ordinary path", testHeldHTTP2)
	t.Run("server timeouts still apply", testHeldTimeouts)
	waitGoroutines(t, base, "the held-call tests")
}

// heldEnv is one server, one raw session and one open question.
func heldEnv(t *testing.T, opts ...envOption) (*mcpEnv, *rpc, string, Outcome) {
	e := newMCPEnv(t, store.NewMemory(), opts...)
	tok := mint(t, "alice")
	r := e.rawSession(tok)
	return e, r, tok, askRaw(t, r, "held?")
}

// openProgress opens a held get_feedback_result and checks what a held
// call starts with: an SSE response over chunked HTTP/1.1 that says the
// connection closes after it, and the first progress notification.
func openProgress(t *testing.T, e *mcpEnv, r *rpc, tok string, o Outcome, id, wait int) *heldStream {
	t.Helper()
	h := openHeld(t, e, tok, r.session, getResultMsg(id, o.SessionID, wait, fmt.Sprint("tok", id)))
	if h.resp.StatusCode != 200 || h.resp.Header.Get("Content-Type") != "text/event-stream" ||
		!h.resp.Close || len(h.resp.TransferEncoding) != 1 || h.resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("held response head: %d %v, close %v, transfer-encoding %v", h.resp.StatusCode, h.resp.Header, h.resp.Close, h.resp.TransferEncoding)
	}
	ev := h.event()
	params, _ := ev["params"].(map[string]any)
	if ev["method"] != "notifications/progress" || params["progressToken"] != fmt.Sprint("tok", id) ||
		!strings.Contains(fmt.Sprint(params["message"]), o.FeedbackURL) {
		t.Fatalf("first event is not this call's progress: %v", ev)
	}
	waitFor(t, "the call to be held", func() bool { return e.m.Held() == 1 })
	return h
}

// released: nothing of the call is left: not held, not counted against
// the caller's cap.
func released(t *testing.T, e *mcpEnv) {
	t.Helper()
	waitFor(t, "the held call to be released", func() bool { return e.m.Held() == 0 && e.m.callsInFlight() == 0 })
}

func testHeldAnswer(t *testing.T) {
	e, r, tok, o := heldEnv(t)
	h := openProgress(t, e, r, tok, o, 41, 600)
	e.submit(o.FeedbackURL, `{"freeText":"held and answered"}`)
	got := h.event()
	h.end()
	released(t, e)
	if got["id"] != float64(41) || got["error"] != nil {
		t.Fatalf("held call's response: %v", got)
	}
	// The same call now that the question is answered does not wait, so
	// it takes the ordinary path: its result must be the same, byte for byte.
	want := r.post(getResultMsg(42, o.SessionID, 600, ""), nil)
	var plain map[string]any
	if err := json.Unmarshal([]byte(want.body), &plain); err != nil {
		t.Fatalf("ordinary response %q: %v", want.body, err)
	}
	a, _ := json.Marshal(got["result"])
	b, _ := json.Marshal(plain["result"])
	if string(a) != string(b) || !strings.Contains(string(a), "held and answered") {
		t.Fatalf("held result differs from the ordinary one:\n held %s\n plain %s", a, b)
	}
	e.waitLog("mcp: stopped waiting", "submitted")
}

func testHeldDeadline(t *testing.T) {
	e, r, tok, o := heldEnv(t)
	h := openProgress(t, e, r, tok, o, 7, 1)
	got := h.event()
	h.end()
	released(t, e)
	b, _ := json.Marshal(got["result"])
	if got["id"] != float64(7) || !strings.Contains(string(b), `"status":"pending"`) || !strings.Contains(string(b), "again") {
		t.Fatalf("a held wait that elapsed: %v", got)
	}
}

func testHeldDisconnect(t *testing.T) {
	e, r, tok, o := heldEnv(t, func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxCallsPerSubject = 1 })
	h := openProgress(t, e, r, tok, o, 3, 600)
	_ = h.conn.Close()
	released(t, e)
	e.waitLog("mcp: stopped waiting", "client went away")
	// The slot is free again (the cap is 1), and the question answerable.
	h = openProgress(t, e, r, tok, o, 4, 600)
	e.submit(o.FeedbackURL, `{"freeText":"after a reconnect"}`)
	if got := h.event(); !strings.Contains(fmt.Sprint(got["result"]), "after a reconnect") {
		t.Fatalf("after a reconnect: %v", got)
	}
	h.end()
	released(t, e)
}

func testHeldCancelled(t *testing.T) {
	e, r, tok, o := heldEnv(t)
	h := openProgress(t, e, r, tok, o, 77, 600)
	// Notifications that do not name this call, or are not well formed,
	// leave it waiting; none is refused with a 5xx.
	for _, body := range []string{
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":78}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"77x"}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":null}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{"id":77}}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"requestId":77,"note":"notifications/cancelled"}}`,
		`[{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77}}]`,
	} {
		if resp := r.post(body, nil); resp.code >= 500 {
			t.Fatalf("%s: HTTP %d %s", body, resp.code, resp.body)
		}
	}
	if e.m.Held() != 1 {
		t.Fatalf("a notification that does not name the call ended it (held %d)", e.m.Held())
	}
	if resp := r.post(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77,"reason":"user"}}`, nil); resp.code != http.StatusAccepted {
		t.Fatalf("notifications/cancelled: HTTP %d %s", resp.code, resp.body)
	}
	// mcp-go answers a cancelled call with a JSON-RPC error on its stream.
	got := h.event()
	h.end()
	released(t, e)
	if got["id"] != float64(77) || got["error"] == nil {
		t.Fatalf("the cancelled call's response: %v", got)
	}
	e.waitLog("mcp: stopped waiting", "client went away")
}

func testHeldDelete(t *testing.T) {
	e, r, tok, o := heldEnv(t)
	h := openProgress(t, e, r, tok, o, 5, 600)
	req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Session-Id", r.session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	got := h.event()
	h.end()
	released(t, e)
	if got["id"] != float64(5) || got["error"] == nil {
		t.Fatalf("the call of a deleted session: %v", got)
	}
}

func testHeldShutdown(t *testing.T) {
	e, r, tok, o := heldEnv(t)
	h := openProgress(t, e, r, tok, o, 9, 600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.m.Shutdown(ctx)
	// Shutdown returns once the held call's result is written.
	if e.m.Held() != 0 {
		t.Fatalf("Shutdown returned with %d calls still held", e.m.Held())
	}
	got := h.event()
	h.end()
	b, _ := json.Marshal(got["result"])
	if got["id"] != float64(9) || !strings.Contains(string(b), "restarting") || !strings.Contains(string(b), `"status":"pending"`) {
		t.Fatalf("a held call on shutdown: %v", got)
	}
}

// testHeldHTTP2: over HTTP/2 nothing can be taken over; the call waits on
// the ordinary path and is answered there.
func testHeldHTTP2(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hc := srv.Client()
	tok := mint(t, "alice")
	tr, err := transport.NewStreamableHTTP(srv.URL+"/mcp", transport.WithHTTPBasicClient(hc),
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion("2025-11-25"))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25"
	init.Params.ClientInfo = mcp.Implementation{Name: "h2", Version: "0"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		t.Fatal(err)
	}
	if tr, ok := hc.Transport.(*http.Transport); !ok || tr.TLSClientConfig == nil || !slices.Contains(tr.TLSClientConfig.NextProtos, "h2") {
		t.Fatal("the test client does not offer HTTP/2")
	}
	o := outcome(t, callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "over h2"}, nil))
	prog := watchProgress(c)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, _ := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
			Arguments: map[string]any{"sessionId": o.SessionID, "wait": 600}, Meta: &mcp.Meta{ProgressToken: "h2"}}})
		done <- res
	}()
	recv(t, prog.first, "progress over HTTP/2")
	if e.m.Held() != 0 {
		t.Fatal("a call over HTTP/2 was held")
	}
	e.submit(o.FeedbackURL, `{"freeText":"over h2"}`)
	if got := outcome(t, recv(t, done, "the result over HTTP/2")); got.Status != store.StatusSubmitted || got.Result.FreeText != "over h2" {
		t.Fatalf("over HTTP/2: %+v", got)
	}
}

// TestHeldRelay: what mcp-go still writes to a request whose call is held
// goes to the held stream, as a chunk, but for the placeholder response;
// nothing follows the end of the body.
func TestHeldRelay(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	hc := &heldCall{conn: srv, call: &inflight{cancel: func(error) {}}}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(cli)
		got <- string(b)
	}()
	note := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n"
	for _, p := range []string{
		note,
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32603,\"message\":\"the call waits off its request\"}}\n\n",
		"event: message\ndata: {not json\n\n",
		"no event at all",
	} {
		hc.relay([]byte(p))
	}
	hc.writeFrame([]byte("last"), true)
	hc.relay([]byte(note))
	_ = srv.Close()
	want := fmt.Sprintf("%x\r\n%s\r\n", len(note), note) + "4\r\nlast\r\n0\r\n\r\n"
	if g := recv(t, got, "the relayed bytes"); g != want {
		t.Fatalf("relayed %q, want %q", g, want)
	}
}

// testHeldTimeouts: Hijack clears the deadlines net/http set for the
// request; a held call gets them back, so a server's ReadTimeout (read:
// the client is taken for gone, as net/http's background read does) and
// WriteTimeout (the next progress cannot be written) end it as they end
// a call on the ordinary path.
func testHeldTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name         string
		read, write  time.Duration
		progressTick time.Duration
	}{
		{"read", 500 * time.Millisecond, 0, time.Hour},
		{"write", 0, 500 * time.Millisecond, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMCPEnv(t, store.NewMemory(), func(mo *MCPOptions, _ *MCPConfig, _ *validate.Limits) { mo.ProgressEvery = tc.progressTick })
			// The same handler on a server with the timeouts (set before
			// it starts); e's cleanup closes it, this one the first.
			first := e.srv
			e.srv = httptest.NewUnstartedServer(first.Config.Handler)
			e.srv.Config.ReadTimeout, e.srv.Config.WriteTimeout = tc.read, tc.write
			e.srv.Start()
			t.Cleanup(first.Close)
			tok := mint(t, "alice")
			r := e.rawSession(tok)
			o := askRaw(t, r, "timeouts")
			start := time.Now()
			h := openProgress(t, e, r, tok, o, 11, 600)
			released(t, e)
			if waited := time.Since(start); waited < 400*time.Millisecond {
				t.Fatalf("released after %v, before the %s timeout", waited, tc.name)
			}
			e.waitLog("mcp: stopped waiting", "client went away")
			_ = h.conn.Close()
		})
	}
}

// testHeldProgressTicks: while held, progress comes every ProgressEvery on
// the call's stream, growing, until the answer.
func testHeldProgressTicks(t *testing.T) {
	e, r, tok, o := heldEnv(t, func(mo *MCPOptions, _ *MCPConfig, _ *validate.Limits) { mo.ProgressEvery = 50 * time.Millisecond })
	h := openProgress(t, e, r, tok, o, 21, 600)
	last := -1.0
	for range 3 {
		ev := h.event()
		params, _ := ev["params"].(map[string]any)
		v, _ := params["progress"].(float64)
		if ev["method"] != "notifications/progress" || params["progressToken"] != "tok21" || v <= last {
			t.Fatalf("tick after progress %v: %v", last, ev)
		}
		last = v
	}
	e.submit(o.FeedbackURL, `{"freeText":"ticked"}`)
	for {
		ev := h.event()
		if ev["method"] == "notifications/progress" {
			continue // a tick that came before the answer
		}
		if ev["id"] != float64(21) || !strings.Contains(fmt.Sprint(ev["result"]), "ticked") {
			t.Fatalf("after the ticks: %v", ev)
		}
		break
	}
	h.end()
	released(t, e)
}
