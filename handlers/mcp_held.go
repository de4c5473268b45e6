package handlers

// Held calls: a tools/call that waits for a person (get_feedback_result
// with wait, interactive_feedback) can wait an hour. Through mcp-go it
// keeps, for all that time, the request's goroutine parked some forty
// frames deep in Caddy, mcp-go and the tool (a 32 KiB stack), net/http's
// background read goroutine, mcp-go's notification forwarder goroutine and
// net/http's 8 KiB of connection buffers: about 78 KB of process memory per
// waiting call (cmd/feedback-bench -only held).
//
// On HTTP/1.1 the wait is taken off the request instead. When the tool is
// about to wait, the response is committed as an SSE stream, the
// connection is hijacked and the request returns (its goroutine, the
// forwarder and the buffers go). The wait goes on in a goroutine that only
// waits (a shallow stack), beside one that only reads the connection, to see
// the client leave. Progress is written to the connection directly. When
// the wait ends, the call's result goes through mcp-go a second time
// (trackCall hands it back), so the response is mcp-go's own: the same
// envelope, output-schema check and bytes as a call that never left. The
// response then ends and the connection closes (Connection: close said so
// up front).
//
// A call whose client takes an elicitation is held too. mcp-go would send
// the elicitation on the request's stream and route the client's reply
// (a POST of its own) to the request; once held, the call sends it on its
// own stream instead, after the takeover (so the two cannot race), with an
// id of its own, and the reply is taken off the reply's POST before mcp-go
// sees it (elicitationReply). elicitation/complete goes to the same
// stream, before the result.
//
// Anything that cannot be taken over keeps the ordinary path: HTTP/2 and
// HTTP/3, sessions of another instance, a response an encoder sits on,
// and a response mcp-go has already begun.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// errHeld is what a held call's first dispatch returns to mcp-go. Its
// response is never written (gateWriter drops it); the client gets the one
// the held call writes.
var errHeld = errors.New("the call waits off its request")

// errHeldPanic is the outcome counted for a held call whose goroutine
// panicked.
var errHeldPanic = errors.New("the held call panicked")

// holdable is a Streamable HTTP POST whose tool call may be held: HTTP/1.1,
// a session open here, a tools/call.
type holdable struct {
	w       http.ResponseWriter // Caddy's writer, for the hijack; nil once held
	body    []byte              // the JSON-RPC message, dispatched again for the result
	srv     *http.Server        // for its read and write timeouts; may be nil
	started time.Time

	// mu orders mcp-go's writes (from the request and its forwarder
	// goroutine) with the takeover.
	mu          sync.Mutex
	wroteHeader bool
	held        bool
	call        *heldCall // once held
}

func newHoldable(w http.ResponseWriter, r *http.Request, body []byte) *holdable {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || !containsToolsCall(body) {
		return nil
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	return &holdable{w: w, body: body, srv: srv, started: time.Now()}
}

// containsToolsCall is a cheap first filter; mcp-go decides what the
// message is.
func containsToolsCall(body []byte) bool {
	return bytes.Contains(body, []byte(`"tools/call"`))
}

// gateWriter is the writer mcp-go gets for a holdable request. Once the
// call is held, what mcp-go still writes there goes to the held stream
// (relay), but for the placeholder response of the first dispatch.
type gateWriter struct {
	flushWriter
	h *holdable
}

func (g gateWriter) WriteHeader(code int) {
	g.h.mu.Lock()
	defer g.h.mu.Unlock()
	if g.h.held || g.h.wroteHeader {
		return
	}
	g.h.wroteHeader = true
	g.flushWriter.WriteHeader(code)
}

func (g gateWriter) Write(p []byte) (int, error) {
	g.h.mu.Lock()
	defer g.h.mu.Unlock()
	if g.h.held {
		g.h.call.relay(p)
		return len(p), nil
	}
	g.h.wroteHeader = true
	return g.flushWriter.Write(p)
}

// relay writes to the held stream an event mcp-go wrote to the request it
// no longer serves: between the takeover and the request's end its
// forwarder, and then its final drain, can still take notifications of the
// session off the session's channel, which the client would otherwise
// never get. A response is dropped: on this stream there is only the one
// to this request, and the first dispatch's is a placeholder.
func (hc *heldCall) relay(p []byte) {
	_, data, ok := bytes.Cut(p, []byte("data: "))
	var msg struct {
		Method string `json:"method"`
	}
	if !ok || json.Unmarshal(bytes.TrimSpace(data), &msg) != nil || msg.Method == "" {
		return
	}
	hc.writeFrame(p, false)
}

func (g gateWriter) Flush() {
	g.h.mu.Lock()
	defer g.h.mu.Unlock()
	if !g.h.held {
		g.flushWriter.Flush()
	}
}

// heldCall is one tool call that may be, or is, held.
type heldCall struct {
	m      *MCP
	hold   *holdable
	call   *inflight
	sess   *mcpSession // nil: not registered here (then never held)
	unlink func() bool // cuts the call's context from the request's
	end    func(*mcp.CallToolResult, error)
	values *callValues

	conn  net.Conn
	wmu   sync.Mutex // one write at a time on conn
	ended bool       // the body's end was written (under wmu)
	mu    sync.Mutex
	took  bool // the wait left the request
	lost  bool // the client went away (read or write failed)

	counted, closed bool // run's goroutine only
}

type heldKey struct{}

func heldFrom(ctx context.Context) *heldCall {
	hc, _ := ctx.Value(heldKey{}).(*heldCall)
	return hc
}

// resumed carries a held call's outcome into its second dispatch.
type resumed struct {
	res *mcp.CallToolResult
	err error
}

type resumeKey struct{}

func (hc *heldCall) taken() bool {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.took
}

// take commits the response as an SSE stream and takes the connection
// over. false: it cannot be, and the call waits on the ordinary path
// (which copes with the stream headers having been sent).
func (hc *heldCall) take(cs server.ClientSession) bool {
	h := hc.hold
	if hc.sess == nil || cs == nil {
		return false
	}
	id, ok := rpcID(h.body)
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held || h.wroteHeader {
		return false // mcp-go has begun this response (a session notification)
	}
	// Once the head below is sent, a call that still cannot be held must
	// have mcp-go answer it as an event stream too: what a progress
	// notification does on the ordinary path (for the session's later
	// responses as well).
	fallback := func() bool {
		if up, ok := cs.(server.SessionWithStreamableHTTPConfig); ok {
			up.UpgradeToSSEWhenReceiveNotification()
		}
		return false
	}
	hdr := h.w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	// The connection ends with the response: net/http cannot have it back.
	hdr.Set("Connection", "close")
	h.w.WriteHeader(http.StatusOK)
	h.wroteHeader = true
	if hdr.Get("Content-Encoding") != "" {
		// Caddy's encode sits in between: its stream is not ours to
		// continue. The head, Connection: close included, is fixed by
		// now: this response keeps the ordinary path and its connection
		// closes after it.
		return fallback()
	}
	rc := http.NewResponseController(h.w)
	if err := rc.Flush(); err != nil {
		return fallback()
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		return fallback()
	}
	// The returned bufio.ReadWriter is let go: net/http's 4 KiB reader and
	// writer are most of what an idle connection holds. The reader can only
	// hold bytes of a pipelined request, which this connection will not
	// serve. Hijack cleared the deadlines net/http set for this request;
	// they are set again, so that a server's read and write timeouts end a
	// held call as they end one on the ordinary path.
	if h.srv != nil {
		if d := h.srv.WriteTimeout; d > 0 {
			_ = conn.SetWriteDeadline(h.started.Add(d))
		}
		if d := h.srv.ReadTimeout; d > 0 {
			_ = conn.SetReadDeadline(h.started.Add(d))
		}
	}
	// The body is kept for the whole wait: exactly its bytes, not the
	// buffer it was read into (copied only for a call that is held).
	h.held, h.w, h.call, h.body = true, nil, hc, bytes.Clone(h.body)
	hc.values.detach()
	hc.conn = conn
	hc.mu.Lock()
	hc.took = true
	hc.mu.Unlock()
	hc.sess.mu.Lock()
	hc.call.heldID = id
	hc.sess.mu.Unlock()
	// The session is in use while the call waits, as while its request
	// was open: the idle sweep must leave it.
	hc.sess.begin()
	hc.m.held.Add(1)
	_, overTLS := conn.(*tls.Conn)
	hc.m.log.Debug("mcp: waiting call taken off its request", zap.Bool("tls", overTLS))
	// From here the request's end (imminent) must not end the call. If it
	// already has (notifications/cancelled raced the takeover), the wait
	// finds its context cancelled and answers as it would have.
	hc.unlink()
	hc.unlink = nil // it refers to the request's context
	go hc.watch()
	return true
}

// watch reads the connection until it fails: the client closed it, or a
// read timeout passed (net/http cancels a request's context for either).
// A client sends nothing while its request is open, but for a pipelined
// request, which is read and dropped.
func (hc *heldCall) watch() {
	buf := make([]byte, 64)
	for {
		if _, err := hc.conn.Read(buf); err != nil {
			hc.gone()
			return
		}
	}
}

// gone marks the client away and ends the wait the way a closed
// connection ends a request's context.
func (hc *heldCall) gone() {
	hc.mu.Lock()
	hc.lost = true
	hc.mu.Unlock()
	hc.call.cancel(context.Canceled)
}

// run waits, then writes the result mcp-go makes of the outcome and
// closes the connection. Its frames, and wait's, are what the goroutine
// keeps while it waits: they are kept small.
// (A deferred recover here would be on the stack all through the wait and
// keep it from shrinking: the code that runs while it waits, progress,
// recovers on its own, finish too.)
func (hc *heldCall) run(ctx context.Context, w *waiting) {
	cur, err := w.wait(ctx)
	hc.finish(ctx, w, cur, err)
}

func (hc *heldCall) finish(ctx context.Context, w *waiting, cur *store.Session, werr error) {
	defer hc.recoverPanic()
	defer w.el.stop() // also when outcome panics
	res, err := w.outcome(ctx, cur, werr)
	w.el.stop() // before the result, as on the ordinary path
	// Counted and released before the write, as on the ordinary path, so a
	// client that calls again at once finds its slot free.
	hc.count(res, err)
	hc.mu.Lock()
	lost := hc.lost
	hc.mu.Unlock()
	if !lost {
		msg := hc.m.server.HandleMessage(context.WithValue(context.WithoutCancel(ctx), resumeKey{}, &resumed{res, err}), hc.hold.body)
		if msg == nil {
			msg = mcp.NewJSONRPCError(mcp.NewRequestId(nil), mcp.INTERNAL_ERROR, "no response", nil)
		}
		hc.write(msg, true)
	}
	hc.close()
}

// count does trackCall's end of the call, once. (run's goroutine only.)
func (hc *heldCall) count(res *mcp.CallToolResult, err error) {
	if !hc.counted {
		hc.counted = true
		hc.end(res, err)
	}
}

// close lets the connection and the call go, once: done is closed after
// the result was written, so Shutdown waits for it. (run's goroutine only.)
func (hc *heldCall) close() {
	if hc.closed {
		return
	}
	hc.closed = true
	_ = hc.conn.Close()
	hc.sess.end()
	hc.m.held.Add(-1)
	close(hc.call.done)
}

// recoverPanic: a panic on the ordinary path is caught by mcp-go's
// recovery middleware; a held call's goroutine is its own, so it catches
// its own, and still gives its slot back and ends its connection.
func (hc *heldCall) recoverPanic() {
	if p := recover(); p != nil {
		hc.m.log.Error("mcp: a held call panicked", zap.Any("panic", p), zap.StackSkip("stack", 1))
		hc.count(nil, errHeldPanic)
		hc.close()
	}
}

// notify writes a notification as mcp-go's SendNotificationToClient would
// send it, to this call's own stream.
func (hc *heldCall) notify(ctx context.Context, method string, params map[string]any) {
	defer func() {
		if p := recover(); p != nil {
			hc.m.log.Error("mcp: a held call's notification panicked", zap.Any("panic", p), zap.StackSkip("stack", 1))
		}
	}()
	cs := server.ClientSessionFromContext(ctx)
	if cs == nil || !cs.Initialized() {
		return
	}
	hc.write(mcp.JSONRPCNotification{
		JSONRPC:      mcp.JSONRPC_VERSION,
		Notification: mcp.Notification{Method: method, Params: mcp.NotificationParams{AdditionalFields: params}},
	}, false)
}

// write sends one SSE event as mcp-go writes it (writeSSEEvent), in the
// chunked framing net/http began the response with; last also ends the
// body.
func (hc *heldCall) write(msg any, last bool) {
	data, err := json.Marshal(msg)
	if err != nil {
		hc.m.log.Error("mcp: held call: encoding a message", zap.Error(err))
		return
	}
	hc.writeFrame(fmt.Appendf(nil, "event: message\ndata: %s\n\n", data), last)
}

// writeFrame writes event as one chunk; last also ends the body.
func (hc *heldCall) writeFrame(event []byte, last bool) {
	frame := fmt.Appendf(make([]byte, 0, len(event)+16), "%x\r\n%s\r\n", len(event), event)
	if last {
		frame = append(frame, "0\r\n\r\n"...)
	}
	hc.wmu.Lock()
	defer hc.wmu.Unlock()
	if hc.ended {
		return // nothing may follow the end of the body
	}
	hc.ended = last
	if _, err := hc.conn.Write(frame); err != nil {
		hc.gone()
	}
}

// heldElicitationPrefix begins the JSON-RPC id of every elicitation a held
// call sends. It is a string, so it cannot meet the numbers mcp-go gives
// its own server-to-client requests.
const heldElicitationPrefix = "feedback-elicitation-"

// elicit sends e's elicitation/create on the held stream and keeps e to
// take the client's reply (elicitationReply).
func (hc *heldCall) elicit(e *elicitation, params mcp.ElicitationParams) error {
	if err := params.Validate(); err != nil {
		return fmt.Errorf("elicitation request: %w", err)
	}
	e.held = hc
	e.rpcID = heldElicitationPrefix + strconv.FormatUint(hc.m.elicitSeq.Add(1), 10)
	s := hc.sess
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errSessionClosed
	}
	if s.elicits == nil {
		s.elicits = make(map[string]*elicitation)
	}
	s.elicits[e.rpcID] = e // before the request leaves: the reply may be quick
	s.mu.Unlock()
	hc.write(mcp.JSONRPCRequest{
		JSONRPC: mcp.JSONRPC_VERSION,
		ID:      mcp.NewRequestId(e.rpcID),
		Request: mcp.Request{Method: string(mcp.MethodElicitationCreate)},
		Params:  params,
	}, false)
	return nil
}

// forgetElicitation stops taking replies to the elicitation id: one that
// comes later goes on to mcp-go, which answers it as it answers a reply to
// a request it no longer waits for (400).
func (s *mcpSession) forgetElicitation(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.elicits, id)
}

// elicitationReply takes body if it is the client's reply to an
// elicitation a held call of this session sent, hands it to the call, and
// answers 202 as mcp-go answers a reply. false: body is something else, or
// comes with a protocol version mcp-go refuses replies under (it answers).
func (s *mcpSession) elicitationReply(w http.ResponseWriter, version string, body []byte) bool {
	if !bytes.Contains(body, []byte(heldElicitationPrefix)) ||
		(version != "" && (!mcp.IsValidProtocolVersion(version) || version == mcp.ProtocolVersion20260728)) {
		return false
	}
	var msg struct {
		ID     any             `json:"id"`
		Method string          `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &msg) != nil || msg.Method != "" {
		return false
	}
	id, ok := msg.ID.(string)
	if !ok {
		return false
	}
	s.mu.Lock()
	e := s.elicits[id]
	if e != nil {
		// One reply per request. stop waits for this one (it forgets e
		// under the same lock before it waits).
		delete(s.elicits, id)
		e.wg.Add(1)
	}
	s.mu.Unlock()
	if e == nil {
		return false
	}
	defer e.wg.Done()
	var (
		res mcp.ElicitationResult
		err error
	)
	switch {
	case msg.Error != nil:
		err = fmt.Errorf("%s error %d: %s", mcp.MethodElicitationCreate, msg.Error.Code, msg.Error.Message)
	case len(msg.Result) == 0:
		err = errors.New("the elicitation reply has neither result nor error")
	default:
		if uerr := json.Unmarshal(msg.Result, &res); uerr != nil {
			err = fmt.Errorf("decode the elicitation reply: %w", uerr)
		}
	}
	if err != nil {
		e.reply(nil, err)
	} else {
		e.reply(&res, nil)
	}
	w.WriteHeader(http.StatusAccepted)
	return true
}

// cancelHeld cancels this session's held call that a notifications/cancelled
// in body names, as mcp-go does for the calls it still runs.
func (s *mcpSession) cancelHeld(body []byte) {
	if !bytes.Contains(body, []byte(`"notifications/cancelled"`)) {
		return
	}
	var n struct {
		Method string `json:"method"`
		Params struct {
			RequestID any `json:"requestId"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &n) != nil || n.Method != string(mcp.MethodNotificationCancelled) || n.Params.RequestID == nil {
		return
	}
	key := fmt.Sprint(n.Params.RequestID)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.calls {
		if c.heldID != "" && c.heldID == key {
			c.cancel(context.Canceled)
		}
	}
}

// rpcID is a request's JSON-RPC id as mcp-go keys its cancellations
// (fmt's %v of the decoded value).
func rpcID(body []byte) (string, bool) {
	var m struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(body, &m) != nil || m.ID == nil {
		return "", false
	}
	return fmt.Sprint(m.ID), true
}

// Held is the number of tool calls waiting off their requests now (for
// tests and benchmarks).
func (m *MCP) Held() int { return int(m.held.Load()) }

// callValues is the value context of a call that may be held: the
// request's values until the hold, then only those the wait and its
// result read. Caddy's request context holds the request and its writer
// (in its replacer's closures and its copy of the original request), and
// through them net/http's connection and its buffers: a held call that
// kept it would keep all that. It is never done; cancellation comes from
// the context trackCall makes on it.
type callValues struct {
	full atomic.Pointer[context.Context] // nil once held
	kept context.Context
}

func newCallValues(srv *server.MCPServer, in context.Context, rq *mcpRequest) *callValues {
	kept := context.WithValue(context.Background(), mcpRequestKey{}, rq)
	if cs := server.ClientSessionFromContext(in); cs != nil {
		kept = srv.WithContext(kept, cs)
	}
	if info := server.RequestProtocolInfoFromContext(in); info != nil {
		kept = server.WithRequestProtocolInfo(kept, info)
	}
	v := &callValues{kept: kept}
	v.full.Store(&in)
	return v
}

func (v *callValues) detach() { v.full.Store(nil) }

func (*callValues) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*callValues) Done() <-chan struct{}       { return nil }
func (*callValues) Err() error                  { return nil }

func (v *callValues) Value(key any) any {
	if full := v.full.Load(); full != nil {
		return (*full).Value(key)
	}
	return v.kept.Value(key)
}
