package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// GET /ws/{id}: live updates of one session.
//
// Who may watch: the owner, with `Authorization: Bearer <JWT>` (scope
// feedback:read) on the handshake; or a browser holding the answer link,
// which sends {"type":"authenticate","data":{"token":"<capability token>"}}
// as its first message within AuthTimeout. Credentials in the URL
// (?apiKey=, ?token=, …) are refused: URLs end up in logs.
//
// Server messages are JSON {type, data, timestamp}:
//
//	connection_established  {sessionId, status, clientType, expiresAt, result?}
//	session_status_changed  {sessionId, status, previousStatus}
//	feedback_submitted      {sessionId, result}
//
// After a terminal state the server closes with 1000. Close codes the client
// should know: 1008 wrong/absent token, 1009 message too big, 1012 config
// reload and 1001 shutdown (reconnect), 1013 too many watchers or store
// unavailable (retry later).
//
// Caddy hands handlers no writer that passes w.(http.Hijacker);
// coder/websocket finds the hijacker through Unwrap, gorilla does not.

// Close codes used here.
const (
	statusNormal         = websocket.StatusNormalClosure
	statusGoingAway      = websocket.StatusGoingAway
	statusPolicy         = websocket.StatusPolicyViolation
	statusServiceRestart = websocket.StatusServiceRestart
	statusTryAgainLater  = websocket.StatusTryAgainLater
)

const (
	// wsReadLimit bounds any client message: the only one that matters is
	// the token message (well under 200 bytes).
	wsReadLimit = 4096
	// maxPendingSockets bounds sockets that have not yet sent a token, so
	// that someone who knows session ids (agents and logs see them) cannot
	// use up the per-session cap without the link; maxPendingPerAddr bounds
	// them per client address, so that one client cannot hold them all and
	// keep real pages out.
	maxPendingSockets = 256
	maxPendingPerAddr = 8
	// closeWait bounds how long Stop waits for close handshakes.
	closeWait = 3 * time.Second
)

// Message types the server sends.
const (
	MsgConnectionEstablished = "connection_established"
	MsgSessionStatusChanged  = "session_status_changed"
	MsgFeedbackSubmitted     = "feedback_submitted"
)

// WSMessage is every message the server sends.
type WSMessage struct {
	Type      string    `json:"type"`
	Data      any       `json:"data"`
	Timestamp time.Time `json:"timestamp"`
}

// credentialParams are query parameters that would put a secret in a URL.
var credentialParams = []string{"apiKey", "apikey", "api_key", "token", "access_token", "t"}

// WS handles GET /ws/{id}.
func (h *Human) WS(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !feedback.ValidID(id) {
		notFound(w)
		return
	}
	q := r.URL.Query()
	for _, p := range credentialParams {
		if q.Has(p) {
			WriteError(w, http.StatusBadRequest, "credentials_in_url",
				"credentials in the URL are not accepted (they end up in logs): send Authorization: Bearer <JWT> on the handshake, or the capability token as the first message")
			return
		}
	}
	clientType := q.Get("clientType")
	switch clientType {
	case "":
		clientType = "web"
	case "web", "app":
	default:
		WriteError(w, http.StatusBadRequest, "invalid_request", "clientType must be web or app")
		return
	}
	if !isWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		WriteError(w, http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
		return
	}

	// Look the question up before anything is held for it: an unknown id
	// gets 404 and costs no slot (a flood of made-up ids holds nothing).
	var (
		owner *store.Owner
		sess  *store.Session
		err   error
	)
	if len(r.Header.Values("Authorization")) > 0 {
		claims, ok := h.svc.authenticate(w, r, auth.ScopeRead)
		if !ok {
			return
		}
		o := OwnerOf(claims)
		sess, err = h.svc.core.Get(r.Context(), o, id)
		owner = &o
	} else {
		err = h.svc.core.Exists(r.Context(), id)
	}
	if err != nil {
		h.svc.storeError(w, r, "get", err)
		return
	}

	sl, err := h.sockets.admit(id, owner, clientAddr(r))
	if err != nil {
		writeAdmitError(w, err)
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			sl.release()
		}
	}()

	if !h.originAllowed(r) {
		h.svc.log.Info("websocket refused: origin not allowed", zap.String("session_id", id), zap.String("remote_addr", r.RemoteAddr),
			zap.String("origin", r.Header.Get("Origin")))
		WriteError(w, http.StatusForbidden, "origin_not_allowed", "pages of another origin may not watch this question")
		return
	}
	// The origin is checked above, scheme included (the library compares
	// hosts only).
	c, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		// Accept has answered (403 for a foreign Origin).
		h.svc.log.Info("websocket refused", zap.String("session_id", id), zap.String("remote_addr", r.RemoteAddr),
			zap.String("origin", r.Header.Get("Origin")), zap.Error(err))
		return
	}
	c.SetReadLimit(wsReadLimit)
	if code, reason, ok := h.sockets.add(c); !ok {
		_ = c.Close(code, reason)
		return
	}
	h.svc.cfg.Observer.WebSockets(1)
	// The connection is hijacked, so it no longer needs this request: it is
	// served on a goroutine of its own and the handler returns. A watcher
	// then holds no request goroutine (whose stack carries Caddy's whole
	// handler chain) and none of the request's state.
	handedOff = true
	go h.serveSocket(c, sl, id, owner, sess, clientType, r.RemoteAddr)
}

// serveSocket serves an accepted socket until it closes: the browser's
// token first when it has no owner, then the hello; the wait goes on in
// a goroutine of its own (see wait).
func (h *Human) serveSocket(c *websocket.Conn, sl *slot, id string, owner *store.Owner, sess *store.Session, clientType, remoteAddr string) {
	// Its own context: the request's ended with the handler.
	ctx, cancel := context.WithCancel(context.Background())
	log := &wsLog{base: h.svc.log, id: id, clientType: clientType, remote: remoteAddr}
	w := &wsWatch{h: h, c: c, sl: sl, ctx: ctx, cancel: cancel, log: log, clientType: clientType}
	waiting := false
	defer func() {
		// As net/http would for a handler: a panic ends this socket only.
		if v := recover(); v != nil {
			log.write(zap.ErrorLevel, "websocket: panic", zap.Any("panic", v), zap.Stack("stack"))
			c.CloseNow()
		}
		if !waiting {
			w.end()
		}
	}()
	if owner == nil {
		if sess = h.authenticateSocket(ctx, c, id, sl, log); sess == nil {
			return
		}
	}
	log.write(zap.DebugLevel, "websocket watching", zap.Bool("owner", owner != nil))
	if w.start(sess) {
		// The goroutine that waits starts afresh, so that what it keeps on
		// its stack for the whole wait is its own few small frames, not
		// this one's (which grew for the handshake and the hello): the GC
		// can then shrink its stack.
		waiting = true
		go w.wait()
	}
}

// wsLog logs for one socket. Its fields are only put together when a line
// is written, which for most sockets is never.
type wsLog struct {
	base                   *zap.Logger
	id, clientType, remote string
}

func (l *wsLog) write(lvl zapcore.Level, msg string, fields ...zap.Field) {
	if ce := l.base.Check(lvl, msg); ce != nil {
		ce.Write(append([]zap.Field{zap.String("session_id", l.id), zap.String("client_type", l.clientType), zap.String("remote_addr", l.remote)}, fields...)...)
	}
}

// wsBufferSize is the read and write buffer of an accepted socket. A
// watcher reads one token message and control frames and writes a few
// small messages; net/http's 4 KiB buffers, which a hijack hands over,
// would be most of what an idle watcher holds.
const wsBufferSize = 256

// smallBuffers gives websocket.Accept the hijacked connection with
// wsBufferSize buffers instead of net/http's.
type smallBuffers struct{ http.ResponseWriter }

// Hijack implements http.Hijacker. Bytes the client sent after the
// handshake and net/http has already read stay buffered in the new reader,
// where Accept looks for them.
func (s smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	n := brw.Reader.Buffered()
	if n == 0 {
		return conn, bufio.NewReadWriter(bufio.NewReaderSize(conn, wsBufferSize), bufio.NewWriterSize(conn, wsBufferSize)), nil
	}
	early, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(n, wsBufferSize))
	if _, err := br.Peek(n); err != nil { // from the bytes.Reader only: never blocks
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, wsBufferSize)), nil
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (s smallBuffers) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// authenticateSocket waits for the browser's token message, checks it and
// returns the question (nil when refused). Unknown id and wrong token get
// the same 1008.
func (h *Human) authenticateSocket(ctx context.Context, c *websocket.Conn, id string, sl *slot, log *wsLog) *store.Session {
	// A timer closes with 1008; a Read deadline would drop the TCP
	// connection without a close frame, and the page could not tell why.
	timer := time.AfterFunc(h.cfg.AuthTimeout, func() {
		_ = c.Close(statusPolicy, "no capability token within "+h.cfg.AuthTimeout.String())
	})
	typ, data, err := c.Read(ctx)
	if !timer.Stop() || err != nil {
		c.CloseNow()
		return nil
	}
	tok, ok := parseAuthMessage(typ, data)
	if !ok {
		_ = c.Close(statusPolicy, `first message must be {"type":"authenticate","data":{"token":"…"}}`)
		return nil
	}
	sess, err := h.svc.core.GetByToken(ctx, id, tok)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.write(zap.InfoLevel, "websocket token refused")
		_ = c.Close(statusPolicy, "unknown session or wrong token")
		return nil
	case err != nil:
		log.write(zap.WarnLevel, "websocket: session store failed", zap.Error(err))
		_ = c.Close(statusTryAgainLater, "session store unavailable; retry")
		return nil
	}
	if err := sl.promote(); err != nil {
		_ = c.Close(statusTryAgainLater, err.Error())
		return nil
	}
	return sess
}

func parseAuthMessage(typ websocket.MessageType, data []byte) (string, bool) {
	if typ != websocket.MessageText {
		return "", false
	}
	var m struct {
		Type string `json:"type"`
		Data struct {
			Token string `json:"token"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Type != "authenticate" ||
		m.Data.Token == "" || len(m.Data.Token) > feedback.MaxTokenLength {
		return "", false
	}
	return m.Data.Token, true
}

// watch sends the current state, then the change to a terminal state,
// until the client leaves or the server stops. The waiting is the core's
// Await; pings run beside it. cancel ends ctx; the reader calls it when
// the client is gone.
// wsWatch is one watching socket after its handshake.
type wsWatch struct {
	h          *Human
	c          *websocket.Conn
	sl         *slot
	ctx        context.Context
	cancel     context.CancelFunc
	log        *wsLog
	clientType string
	readerDone chan struct{} // nil until the reader runs
	id         string
	prev       store.Status
}

// start runs the reader and sends the hello; false when the socket is done
// with already (a terminal question, a failed write).
func (w *wsWatch) start(sess *store.Session) bool {
	w.id, w.prev = sess.ID, sess.Status
	// The reader answers pings and close frames and notices a client that
	// left; data messages after the token are ignored (size-limited).
	w.readerDone = make(chan struct{})
	go w.read()
	hello := map[string]any{"sessionId": w.id, "status": sess.Status, "clientType": w.clientType, "expiresAt": sess.ExpiresAt}
	if sess.Result != nil {
		hello["result"] = sess.Result
	}
	if w.h.send(w.ctx, w.c, MsgConnectionEstablished, hello) != nil {
		return false
	}
	if sess.Status.Terminal() {
		_ = w.c.Close(statusNormal, "session "+string(sess.Status))
		return false
	}
	return true
}

func (w *wsWatch) read() {
	defer close(w.readerDone)
	defer w.cancel()
	for {
		if _, _, err := w.c.Read(w.ctx); err != nil {
			return
		}
	}
}

// wait waits for the question's end, tells the socket, and ends it. Pings
// ride on this goroutine: a watcher costs two goroutines, this one and the
// reader. It holds no deferred recover (which would stay on the stack for
// the whole wait); what runs during the wait, the ping, recovers itself.
func (w *wsWatch) wait() {
	done, err := w.h.svc.core.AwaitEvery(w.ctx, w.id, time.Time{}, feedback.Every{D: w.h.cfg.PingInterval, Fn: w.ping})
	w.finish(done, err)
}

func (w *wsWatch) ping() (alive bool) {
	defer func() {
		if v := recover(); v != nil {
			w.log.write(zap.ErrorLevel, "websocket: panic", zap.Any("panic", v), zap.Stack("stack"))
			alive = false
		}
	}()
	return w.h.ping(w.ctx, w.c, w.log)
}

// finish tells the socket how the wait ended and closes it.
func (w *wsWatch) finish(done *store.Session, err error) {
	defer w.end()
	defer func() {
		if v := recover(); v != nil {
			w.log.write(zap.ErrorLevel, "websocket: panic", zap.Any("panic", v), zap.Stack("stack"))
			w.c.CloseNow()
		}
	}()
	if err != nil {
		w.h.closeFor(w.c, err, w.log)
		return
	}
	if !done.Status.Terminal() {
		return // unreachable: an unbounded Await ends terminal or with an error
	}
	if w.h.send(w.ctx, w.c, MsgSessionStatusChanged, map[string]any{"sessionId": w.id, "status": done.Status, "previousStatus": w.prev}) != nil {
		return
	}
	if done.Status == store.StatusSubmitted {
		if w.h.send(w.ctx, w.c, MsgFeedbackSubmitted, map[string]any{"sessionId": w.id, "result": done.Result}) != nil {
			return
		}
	}
	_ = w.c.Close(statusNormal, "session "+string(done.Status))
}

// end lets the socket go: its reader, its slot, its count.
func (w *wsWatch) end() {
	w.cancel()
	w.c.CloseNow()
	if w.readerDone != nil {
		<-w.readerDone
	}
	w.h.sockets.remove(w.c)
	w.h.svc.cfg.Observer.WebSockets(-1)
	w.sl.release()
}

// closeFor closes the socket for a wait that ended in err, with the code
// that tells the page what to do.
func (h *Human) closeFor(c *websocket.Conn, err error, log *wsLog) {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	case errors.Is(err, store.ErrNotFound):
		_ = c.Close(statusNormal, "session no longer exists")
	case errors.Is(err, feedback.ErrStoreClosed):
		// A new configuration has its own store; the client reconnects there.
		_ = c.Close(statusServiceRestart, "store closed; reconnect")
	default:
		log.write(zap.WarnLevel, "websocket: session store failed", zap.Error(err))
		_ = c.Close(statusTryAgainLater, "session store unavailable; retry")
	}
}

// ping checks that the peer is still there; false when it is gone.
func (h *Human) ping(ctx context.Context, c *websocket.Conn, log *wsLog) bool {
	defer h.bound(c).Stop()
	if err := c.Ping(ctx); err != nil {
		log.write(zap.DebugLevel, "websocket ping failed", zap.Error(err))
		return false
	}
	return true
}

func (h *Human) send(ctx context.Context, c *websocket.Conn, typ string, data any) error {
	b, err := json.Marshal(WSMessage{Type: typ, Data: data, Timestamp: time.Now().UTC()})
	if err != nil {
		return err
	}
	defer h.bound(c).Stop()
	return c.Write(ctx, websocket.MessageText, b)
}

// bound limits a write or ping on c to WriteTimeout: past it the
// connection is closed, which is what the library does when a write's
// context expires. A timer instead of a context with a deadline, because
// the library keeps the context of a socket's last write until the next
// one, and a watcher writes rarely: each would keep a dead timer context.
func (h *Human) bound(c *websocket.Conn) *time.Timer {
	return time.AfterFunc(h.cfg.WriteTimeout, func() { c.CloseNow() })
}

// originAllowed: no Origin (not a browser), an allowed origin, or this
// site's own origin with the request's own scheme: an https page must not
// watch over http, nor the other way round. Behind a proxy that ends TLS,
// set public_url so its origin is allowed.
func (h *Human) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	canon := strings.ToLower(u.Scheme + "://" + u.Host)
	if slices.Contains(h.originPatterns, canon) {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(u.Host, r.Host) && strings.EqualFold(u.Scheme, scheme)
}

// clientAddr is the address a pending socket counts against: the peer's
// IP (a proxy in front makes every client one address; then the total cap
// is what holds).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Admission errors.
var (
	errStopping       = errors.New("the server is restarting; reconnect shortly")
	errSessionFull    = errors.New("too many open connections for this session")
	errSubjectFull    = errors.New("too many open connections for this token's subject")
	errTooManyPending = errors.New("too many connections waiting to authenticate")
)

func writeAdmitError(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	if errors.Is(err, errStopping) {
		WriteError(w, http.StatusServiceUnavailable, "restarting", err.Error())
		return
	}
	w.Header().Set("Retry-After", "10")
	WriteError(w, http.StatusTooManyRequests, "too_many_connections", err.Error())
}

// registry tracks the open sockets of one configuration: for the caps, and
// so that Stop can close them. Caddy's server shutdown does not see
// hijacked connections, so nobody else would.
type registry struct {
	mu         sync.Mutex
	maxSession int
	maxSubject int
	conns      map[*websocket.Conn]struct{}
	perSession map[string]int
	perSubject map[store.Owner]int
	pending    int
	pendingBy  map[string]int // client address → pending sockets
	closed     bool
	code       websocket.StatusCode
	reason     string
}

func newRegistry(maxSession, maxSubject int) *registry {
	return &registry{
		maxSession: maxSession, maxSubject: maxSubject,
		conns:      map[*websocket.Conn]struct{}{},
		perSession: map[string]int{},
		perSubject: map[store.Owner]int{},
		pendingBy:  map[string]int{},
	}
}

// slot is one admitted connection's place under the caps.
type slot struct {
	r       *registry
	id      string
	owner   *store.Owner
	addr    string
	pending bool
	counted bool
}

// admit reserves a place: an owner's socket counts against its session and
// subject at once; a browser's is pending until its token checks out, and
// counts against its address meanwhile.
func (r *registry) admit(id string, owner *store.Owner, addr string) (*slot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errStopping
	}
	s := &slot{r: r, id: id, owner: owner, addr: addr}
	if owner == nil {
		if r.pending >= maxPendingSockets || r.pendingBy[addr] >= maxPendingPerAddr {
			return nil, errTooManyPending
		}
		r.pending++
		r.pendingBy[addr]++
		s.pending = true
		return s, nil
	}
	if r.perSession[id] >= r.maxSession {
		return nil, errSessionFull
	}
	if r.perSubject[*owner] >= r.maxSubject {
		return nil, errSubjectFull
	}
	r.perSession[id]++
	r.perSubject[*owner]++
	s.counted = true
	return s, nil
}

// leavePending gives back a pending slot's place (r.mu held).
func (s *slot) leavePending() {
	if !s.pending {
		return
	}
	r := s.r
	r.pending--
	if r.pendingBy[s.addr]--; r.pendingBy[s.addr] <= 0 {
		delete(r.pendingBy, s.addr)
	}
	s.pending = false
}

// promote turns a pending browser slot into a counted one.
func (s *slot) promote() error {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	s.leavePending()
	if r.perSession[s.id] >= r.maxSession {
		return errSessionFull
	}
	r.perSession[s.id]++
	s.counted = true
	return nil
}

func (s *slot) release() {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	s.leavePending()
	if !s.counted {
		return
	}
	s.counted = false
	if r.perSession[s.id]--; r.perSession[s.id] <= 0 {
		delete(r.perSession, s.id)
	}
	if s.owner != nil {
		if r.perSubject[*s.owner]--; r.perSubject[*s.owner] <= 0 {
			delete(r.perSubject, *s.owner)
		}
	}
}

// add registers an accepted socket, or says how to close it when the
// configuration is already stopping.
func (r *registry) add(c *websocket.Conn) (websocket.StatusCode, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.code, r.reason, false
	}
	r.conns[c] = struct{}{}
	return 0, "", true
}

func (r *registry) remove(c *websocket.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// closeAll closes every socket with code and refuses new ones. It waits a
// bounded time for the close handshakes, so that on exit the frames are on
// the wire before the process ends. Later calls do nothing.
func (r *registry) closeAll(code websocket.StatusCode, reason string) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed, r.code, r.reason = true, code, reason
	conns := make([]*websocket.Conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close(code, reason)
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
