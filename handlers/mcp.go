package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Elicitation modes (the `elicitation` option).
const (
	ElicitationOff  = "off"
	ElicitationURL  = "url"
	ElicitationForm = "form"
)

// MCPOptions configure the MCP server that outlives config reloads.
type MCPOptions struct {
	// Logger is for what happens outside any one request (sweeps, the
	// library's own messages). Per-request logs go to the Service's logger.
	Logger *zap.Logger
	// Observer counts sessions and tool calls (metrics); nil: nobody.
	Observer Observer
	// IdleTTL is how long a Streamable HTTP session may go without a
	// request, an open stream or a call in flight before it is dropped.
	// Clients that vanish without DELETE would otherwise stay forever.
	// Default 30m.
	IdleTTL time.Duration
	// ProgressEvery is how often a waiting call sends progress. Default 15s.
	ProgressEvery time.Duration
	// KeepAlive is the ping interval on idle SSE and GET streams, so that
	// proxies do not cut them. Default 25s.
	KeepAlive time.Duration
}

// MCPConfig is what one configuration (one handler instance) adds to a
// request: which service it belongs to and how it may reach the person.
type MCPConfig struct {
	// Elicitation is off, url (default) or form.
	Elicitation string
	// Prefix returns the path prefix a proxy stripped before the request
	// reached the module (e.g. "/feedback-mcp" under handle_path), so that
	// the SSE endpoint event names a path the client can reach. nil: none.
	Prefix func(r *http.Request) string
	// AllowedOrigins are origins (scheme://host[:port], lower case) whose
	// browser requests are accepted even on a loopback listener: the public
	// URL's and the configured allowed_origins. See checkOrigin.
	AllowedOrigins []string
	// MaxSessionsPerSubject caps the MCP sessions (SSE streams and
	// Streamable HTTP sessions) one token subject may hold at once, so a
	// flood of connections from one token cannot exhaust the server.
	// 0 means DefaultMaxMCPSessionsPerSubject.
	MaxSessionsPerSubject int
	// SessionKey signs Streamable HTTP session ids, so that every instance
	// sharing the site's secret recognises them (mcp_sessionid.go). Empty:
	// ids are known only to the instance that minted them.
	SessionKey []byte
	// StateKey signs the requestState of 2026-07-28 input-required results
	// (mcp_stateless.go), so a retry may reach any instance sharing the
	// site's secret. Empty: a key of this process only.
	StateKey []byte
	// MaxCallsPerSubject caps the tool calls one subject may have in flight
	// at once (each waiting call holds a connection for up to an hour).
	// 0 means DefaultMaxMCPCallsPerSubject.
	MaxCallsPerSubject int
}

// Defaults of MCPConfig's caps (the root's table of defaults repeats them).
const (
	DefaultMaxMCPSessionsPerSubject = 50
	DefaultMaxMCPCallsPerSubject    = 100
)

// sseDrainWait bounds how long Shutdown waits for an SSE stream to write a
// cancelled call's result.
const sseDrainWait = 500 * time.Millisecond

// maxMCPBody caps a JSON-RPC message. Tool arguments are held to the
// REST API's 64 KiB by the tools; the envelope and an elicitation answer
// need little more.
const maxMCPBody = 256 << 10

// MCP is the MCP server: the mcp-go server, its two transports and the
// sessions they hold. One is shared by every configuration that uses the
// same store, across reloads, because an SSE stream and a Streamable HTTP
// session opened under one configuration keep being used under the next.
// Everything that differs between configurations travels with each request
// (see mcpRequest), so tools always act for the configuration the request
// came through.
type MCP struct {
	opts   MCPOptions
	log    *zap.Logger
	server *server.MCPServer
	sse    *server.SSEServer
	http   *server.StreamableHTTPServer

	sessions sync.Map // MCP session id → *mcpSession
	// terminated are Streamable HTTP session ids ended here.
	terminated endedIDs

	// owners counts, per subject, the sessions held plus the requests that
	// may create one and have not yet; see reserve.
	ownersMu sync.Mutex
	owners   map[store.Owner]int

	// held counts the calls waiting off their requests (mcp_held.go).
	held atomic.Int64
	// elicitSeq numbers the elicitation requests held calls send.
	elicitSeq atomic.Uint64

	callsMu sync.Mutex
	calls   map[*inflight]struct{}
	// callsBy counts the calls in flight per subject (under callsMu).
	callsBy map[store.Owner]int
	closing atomic.Bool

	// localStateKey signs requestStates when the configuration has no
	// StateKey (no shared secret).
	localStateKey []byte

	stopSweep context.CancelFunc
	swept     chan struct{}
	notified  chan struct{} // closed when runTaskNotifier has returned

	// taskKV is the store's KV the task notifier reads (set by TaskEvents);
	// taskQueue carries changed questions to it (see mcp_tasks.go).
	taskKV    atomic.Pointer[store.KV]
	taskQueue chan *store.Session
	closeOnce sync.Once
}

// mcpSession is what we keep per MCP session: who opened it, and whether
// anything of it is still going on.
type mcpSession struct {
	owner      store.Owner
	sse        bool
	reserved   bool         // holds one of owner's session slots (released on unregister)
	lastActive atomic.Int64 // unix nanos of the last request's start or end
	busy       atomic.Int32 // requests (streams, calls) open right now

	// stream is the legacy SSE session's event stream.
	stream *streamState

	mu     sync.Mutex
	closed bool
	calls  map[*inflight]struct{}
	links  linkCache
	// elicits are the elicitations held calls of this session sent on
	// their own streams, by JSON-RPC id, until answered or ended
	// (mcp_held.go).
	elicits map[string]*elicitation
}

// streamState lets Shutdown see an SSE stream write: a call's result goes
// out on the session's stream some time after the call returns, and the
// stream must not be closed before that.
type streamState struct {
	flushed chan struct{} // capacity 1; a value means "flushed since drained"
}

// inflight is one tool call that can be cancelled from outside: when its
// session ends (the SSE stream closed) or the process exits.
type inflight struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	// heldID is the JSON-RPC id (as mcp-go keys it) of a call held off
	// its request, which notifications/cancelled names; "" otherwise.
	// Under its session's mu.
	heldID string
}

// Causes of a tool call's cancellation that do not come from the client.
var (
	errSessionClosed = errors.New("the MCP session ended (client disconnected)")
	errShutdown      = errors.New("the server is shutting down")
)

// ctxKey types for what the HTTP layer hands to tools.
type mcpRequestKey struct{}

// mcpRequest is the per-request state tools read from their context.
type mcpRequest struct {
	svc    *Service
	claims *auth.Claims
	cfg    MCPConfig
	base   string // answer-link base for this request
	prefix string // stripped path prefix (SSE endpoint)
	sse    bool
	stream *streamState // the SSE GET's stream, on that request only
	// reserved: this request holds a session slot of its owner; registered:
	// a session was made from it, which now holds the slot instead.
	reserved   bool
	registered atomic.Bool
	// hold lets a waiting tool call of this request go on without its
	// goroutine (mcp_held.go); nil where that cannot be done.
	hold *holdable
}

func requestFrom(ctx context.Context) *mcpRequest {
	rq, _ := ctx.Value(mcpRequestKey{}).(*mcpRequest)
	return rq
}

// NewMCP builds the MCP server and its transports. Close releases it.
func NewMCP(opts MCPOptions) *MCP {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.IdleTTL <= 0 {
		opts.IdleTTL = 30 * time.Minute
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 15 * time.Second
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 25 * time.Second
	}
	m := &MCP{opts: opts, log: opts.Logger, calls: map[*inflight]struct{}{}, callsBy: map[store.Owner]int{}, swept: make(chan struct{}),
		notified: make(chan struct{}), taskQueue: make(chan *store.Session, 256), localStateKey: []byte(rand.Text() + rand.Text())}

	hooks := &server.Hooks{}
	hooks.AddOnRegisterSession(m.onRegister)
	hooks.AddOnUnregisterSession(m.onUnregister)
	// 2026-07-28 clients (server/discover) get tasks as the extension only:
	// the 2025-11-25 capabilities.tasks slot is not theirs.
	hooks.AddAfterDiscover(func(_ context.Context, _ any, _ *mcp.DiscoverRequest, res *mcp.DiscoverResult) {
		if res != nil {
			res.Capabilities.Tasks = nil
		}
	})
	m.server = server.NewMCPServer("caddy-mcp-feedback", moduleVersion(), append(m.appsOptions(hooks),
		server.WithInstructions(serverInstructions),
		server.WithToolCapabilities(false),
		server.WithLogging(),
		// Advertised here, answered in mcp_tasks.go before mcp-go sees
		// the request: the library's own task handling is not used.
		server.WithTaskCapabilities(true, true, true),
		// The 2026-07-28 tasks extension (mcp_tasksext.go). NB: mcp-go's
		// WithExtensions replaces the whole map, so every extension this
		// server speaks must be named in this one call.
		server.WithExtensions(map[string]any{TasksExtension: map[string]any{}}),
		server.WithHooks(hooks),
		server.WithRecovery(),
		// The structured result of every tool is checked against its
		// declared output schema, so a drift is a visible tool error
		// rather than a client silently getting an off-contract result.
		server.WithOutputSchemaValidation(),
		server.WithToolHandlerMiddleware(m.trackCall),
	)...)
	m.addTools()
	m.addApps()

	slogger := slog.New(zapslog.NewHandler(m.log.Named("mcp-go").Core()))
	m.sse = server.NewSSEServer(m.server,
		// The endpoint event must be a root-relative path: an absolute URL
		// (WithBaseURL) is refused by the TS SDK as soon as the origin the
		// client used differs in any way (localhost vs 127.0.0.1, a tunnel).
		server.WithDynamicBasePath(func(r *http.Request, _ string) string {
			if rq := requestFrom(r.Context()); rq != nil {
				return rq.prefix
			}
			return ""
		}),
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		// Authentication is the JWT, checked before mcp-go sees a request;
		// the library's loopback-Host guard would only break proxies and
		// tunnels. checkOrigin does the browser part properly.
		server.WithSSEDisableLocalhostProtection(true),
		server.WithKeepAliveInterval(opts.KeepAlive),
	)
	m.http = server.NewStreamableHTTPServer(m.server,
		server.WithDisableLocalhostProtection(true),
		server.WithHeartbeatInterval(opts.KeepAlive),
		server.WithStreamableHTTPLogger(slogger),
		server.WithSessionIdManagerResolver(sessionIDs{m}),
		// No WithSessionIdleTTL: its sweeper neither counts a call in
		// flight as activity nor lets anyone veto a sweep, so a call
		// waiting longer than the TTL would lose its session (subject
		// binding, elicitation replies) mid-wait. sweep below does the same
		// job with bookkeeping that knows what is open.
	)
	ctx, cancel := context.WithCancel(context.Background())
	m.stopSweep = cancel
	go m.sweep(ctx)
	go func() {
		defer close(m.notified)
		m.runTaskNotifier(ctx)
	}()
	return m
}

const serverInstructions = `This server lets you ask the user (a person) a question and get their answer, even when they are not at this terminal: they answer on a web page.
Call interactive_feedback when you need a decision, a confirmation or information only the user has. Show them the feedbackUrl it returns, then call get_feedback_result with wait to receive the answer.
If the question expires unanswered, the user is away: continue with your best judgement and do not ask the same question again.`

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/mcpfeedback/caddy-mcp-feedback" && d.Version != "" {
				return d.Version
			}
		}
		if bi.Main.Path == "github.com/mcpfeedback/caddy-mcp-feedback" && bi.Main.Version != "" {
			return bi.Main.Version
		}
	}
	return "devel"
}

// MCPEndpoints are the three HTTP endpoints of one configuration.
type MCPEndpoints struct {
	// Streamable is /mcp: POST messages, GET the server's stream, DELETE
	// the session.
	Streamable http.Handler
	// SSE is /sse, the legacy transport's event stream.
	SSE http.Handler
	// Message is /message, where legacy SSE clients POST.
	Message http.Handler
}

// Endpoints returns the handlers for one configuration.
func (m *MCP) Endpoints(svc *Service, cfg MCPConfig) MCPEndpoints {
	if cfg.Elicitation == "" {
		cfg.Elicitation = ElicitationURL
	}
	return MCPEndpoints{
		Streamable: Methods(m.serve(svc, cfg, m.http, false, func(r *http.Request) string { return r.Header.Get(server.HeaderKeySessionID) }),
			http.MethodPost, http.MethodGet, http.MethodDelete),
		SSE:     Methods(m.serve(svc, cfg, m.sse.SSEHandler(), true, nil), http.MethodGet),
		Message: Methods(m.serve(svc, cfg, m.sse.MessageHandler(), true, func(r *http.Request) string { return r.URL.Query().Get("sessionId") }), http.MethodPost),
	}
}

// serve is the layer every MCP request passes before mcp-go: origin check,
// authentication, body limit, session binding, then the library with a
// writer that can flush through Caddy's wrappers.
func (m *MCP) serve(svc *Service, cfg MCPConfig, next http.Handler, sse bool, sessionID func(*http.Request) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if m.closing.Load() {
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down; reconnect in a moment")
			return
		}
		if !checkOrigin(r, cfg.AllowedOrigins) {
			svc.log.Info("mcp: cross-origin browser request refused", zap.String("origin", r.Header.Get("Origin")), zap.String("remote_addr", r.RemoteAddr))
			WriteError(w, http.StatusForbidden, "origin_not_allowed",
				"requests from web pages of another origin are not accepted (DNS-rebinding protection); use an MCP client, or serve the page from this server's origin")
			return
		}
		claims, ok := svc.Authenticate(w, r, "")
		if !ok {
			return
		}
		if r.Method == http.MethodPost {
			body, err := readLimited(w, r, maxMCPBody)
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", "the JSON-RPC message is larger than 256 KiB")
					return
				}
				WriteError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
				return
			}
			r.Body = bodyBytes{bytes.NewReader(body), body}
		}
		owner := OwnerOf(claims)
		var local *mcpSession // the session, when it is open on this instance
		if sessionID != nil {
			id := sessionID(r)
			switch s := m.session(id); {
			case id == "" && !sse && r.Method != http.MethodPost:
				// A GET stream or a DELETE belongs to a session; without
				// one nothing may be created.
				WriteError(w, http.StatusBadRequest, "session_required",
					"this request needs the Mcp-Session-Id header of an open session; start one with an initialize POST")
				return
			case id != "" && s == nil && !sse && !m.terminated.has(id) && signedFor(cfg.SessionKey, id, owner):
				// Opened by another instance (or before a restart) for this
				// same identity: served here like mcp-go's other
				// requests without local state; elicitation replies need
				// the instance that holds the session's stream.
			case id != "" && s == nil:
				// Unknown, terminated or expired: 404 tells the client to
				// initialize again (Streamable HTTP), and nothing is created
				// for it.
				WriteError(w, http.StatusNotFound, "session_not_found",
					"no open MCP session has this id (it ended, expired or never existed); start a new one with initialize")
				return
			case s != nil && s.owner != owner:
				svc.log.Info("mcp: session used with another identity's token refused",
					zap.String("sub", claims.Subject), zap.String("remote_addr", r.RemoteAddr))
				WriteError(w, http.StatusForbidden, "session_forbidden",
					"this MCP session was opened with another identity's token; open a new session (initialize) with your own token")
				return
			case s != nil:
				s.begin()
				defer s.end()
				local = s
			}
		}
		rq := &mcpRequest{svc: svc, claims: claims, cfg: cfg, base: svc.cfg.BaseURL(r), sse: sse}
		// An SSE GET, or a Streamable POST without a session id (initialize),
		// may create a session: it takes a slot of the owner's cap first,
		// so that a flood of them cannot pass the cap between check and use.
		if (sse && r.Method == http.MethodGet) || (!sse && r.Method == http.MethodPost && sessionID != nil && sessionID(r) == "") {
			limit := cfg.MaxSessionsPerSubject
			if limit <= 0 {
				limit = DefaultMaxMCPSessionsPerSubject
			}
			if !m.reserve(owner, limit) {
				svc.log.Info("mcp: session cap reached", zap.String("sub", claims.Subject), zap.Int("max", limit))
				w.Header().Set("Retry-After", "30")
				WriteError(w, http.StatusTooManyRequests, "too_many_sessions", fmt.Sprintf(
					"this token's subject already holds %d MCP sessions; close one (DELETE /mcp, or end an SSE stream) or let idle ones expire", limit))
				return
			}
			rq.reserved = true
			defer func() {
				if !rq.registered.Load() {
					m.release(owner)
				}
			}()
		}
		if cfg.Prefix != nil {
			rq.prefix = cfg.Prefix(r)
		}
		if sse && r.Method == http.MethodGet {
			rq.stream = &streamState{flushed: make(chan struct{}, 1)}
		}
		if !sse && local != nil && r.Method == http.MethodPost {
			if body, ok := r.Body.(interface{ Bytes() []byte }); ok {
				// A call held off its request (mcp_held.go) is no longer
				// in mcp-go's table of requests notifications/cancelled
				// looks in; the notification still goes on to mcp-go.
				local.cancelHeld(body.Bytes())
				// The client's reply to a held call's elicitation is for
				// that call, not for mcp-go, which never sent it.
				if local.elicitationReply(w, r.Header.Get(server.HeaderKeyProtocolVersion), body.Bytes()) {
					return
				}
				rq.hold = newHoldable(w, r, body.Bytes())
			}
		}
		ctx := context.WithValue(r.Context(), mcpRequestKey{}, rq)
		if r.Method == http.MethodPost && sessionID != nil {
			if body, ok := r.Body.(interface{ Bytes() []byte }); ok {
				if msg, ok := taskRoute(body.Bytes()); ok {
					plain, handled := m.routeTask(ctx, w, r, rq, msg, sse, sessionID(r))
					if handled {
						return
					}
					nb := bodyBytes{bytes.NewReader(plain), plain}
					r.Body, body = nb, nb
				} else if msg, ok := extRoute(r, body.Bytes()); ok && !sse && sessionID(r) == "" {
					m.serveModernTask(ctx, w, r, rq, msg)
					return
				}
				if !sse && m.checkRequestState(w, r, rq, body.Bytes()) {
					return
				}
			}
		}
		var out http.ResponseWriter = flushWriter{w, rq.stream}
		if rq.hold != nil {
			out = gateWriter{flushWriter{w, nil}, rq.hold}
		}
		next.ServeHTTP(out, r.WithContext(ctx))
	}
}

// flushWriter gives mcp-go the http.Flusher it type-asserts for. Caddy's
// response writers (access log, encode, timeouts) implement Unwrap and
// FlushError but not Flush, so without this the SSE GET answers 500, the
// Streamable GET 405, and progress never leaves the server.
type flushWriter struct {
	http.ResponseWriter
	st *streamState // nil but for SSE streams
}

func (f flushWriter) Flush() {
	_ = http.NewResponseController(f.ResponseWriter).Flush()
	if f.st != nil {
		select {
		case f.st.flushed <- struct{}{}:
		default:
		}
	}
}

// Unwrap lets http.ResponseController (write deadlines) reach the writer.
func (f flushWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// checkOrigin is the DNS-rebinding protection the MCP transport spec asks
// for, in a form that survives proxies: only browsers send Origin, and a
// page that rebinds a name to this machine's loopback listener still sends
// its own origin. So a request with an Origin that arrives on a loopback
// listener must come from a loopback origin (or the configured public
// origin). Requests without Origin (every non-browser MCP client) and
// requests to public listeners are left to the JWT check.
func checkOrigin(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, a := range allowed {
		if strings.EqualFold(origin, a) {
			return true
		}
	}
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || !isLoopbackAddr(la.String()) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return isLoopbackHost(u.Hostname())
}

func isLoopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (m *MCP) session(id string) *mcpSession {
	if v, ok := m.sessions.Load(id); ok {
		return v.(*mcpSession)
	}
	return nil
}

func (s *mcpSession) begin() {
	s.busy.Add(1)
	s.lastActive.Store(time.Now().UnixNano())
}

func (s *mcpSession) end() {
	s.lastActive.Store(time.Now().UnixNano())
	s.busy.Add(-1)
}

// onRegister binds a new MCP session to the identity whose token opened it.
func (m *MCP) onRegister(ctx context.Context, cs server.ClientSession) {
	rq := requestFrom(ctx)
	if rq == nil {
		return
	}
	s := &mcpSession{owner: OwnerOf(rq.claims), sse: rq.sse, stream: rq.stream, calls: map[*inflight]struct{}{}, reserved: true}
	if !rq.reserved || rq.registered.Swap(true) {
		// Every session holds a slot, however it started: one that came
		// without a reservation takes one now (serve lets only reserving
		// requests create sessions, so this is a safety net).
		m.take(s.owner)
	}
	s.lastActive.Store(time.Now().UnixNano())
	m.sessions.Store(cs.SessionID(), s)
	m.opts.Observer.MCPSessions(1)
}

// onUnregister forgets the session and cancels its calls still running.
// On SSE this is the only way a call learns that its client went away:
// mcp-go runs SSE messages on a context that is never cancelled.
func (m *MCP) onUnregister(_ context.Context, cs server.ClientSession) {
	v, ok := m.sessions.LoadAndDelete(cs.SessionID())
	if !ok {
		return
	}
	m.opts.Observer.MCPSessions(-1)
	s := v.(*mcpSession)
	if s.reserved {
		m.release(s.owner)
	}
	s.mu.Lock()
	s.closed = true
	calls := s.calls
	s.calls = nil
	s.mu.Unlock()
	for c := range calls {
		c.cancel(errSessionClosed)
	}
}

// trackCall is the tool middleware that makes every call cancellable from
// outside: by its session's end and by process exit. A call that may be held
// (mcp_held.go) gets a context of its own, linked to the request's only until
// the hold takes over, and hands its end to the held call.
func (m *MCP) trackCall(next server.ToolHandlerFunc) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if r, ok := ctx.Value(resumeKey{}).(*resumed); ok {
			// The second dispatch of a held call: its outcome is known and
			// was counted when it ended; mcp-go turns it into the response.
			return r.res, r.err
		}
		rq := requestFrom(ctx)
		in := ctx // the request's (and mcp-go's notifications/cancelled) context
		holdable := rq != nil && rq.hold != nil
		var values *callValues
		if holdable {
			values = newCallValues(m.server, in, rq)
			ctx = values
		}
		ctx, cancel := context.WithCancelCause(ctx)
		unlink := func() bool { return true }
		if holdable {
			// Until the hold takes over, the request's end ends the call,
			// with the same cause, as if ctx were its child.
			unlink = context.AfterFunc(in, func() { cancel(context.Cause(in)) })
		}
		c := &inflight{cancel: cancel, done: make(chan struct{})}

		var owner store.Owner
		if rq != nil {
			owner = OwnerOf(rq.claims)
		}
		limit := callLimit(rq)
		if !m.admit(c, owner, limit) {
			unlink()
			cancel(nil)
			m.opts.Observer.ToolCall(req.Params.Name, "refused")
			return toolError("this token's subject already has %d tool calls in flight (the limit); wait for one to finish or cancel one, then try again", limit), nil
		}

		var s *mcpSession
		if cs := server.ClientSessionFromContext(ctx); cs != nil {
			if s = m.session(cs.SessionID()); s != nil {
				s.mu.Lock()
				if s.closed {
					cancel(errSessionClosed)
				} else {
					s.calls[c] = struct{}{}
				}
				s.mu.Unlock()
			}
		}
		// end is the call's bookkeeping once it has its outcome: counted,
		// and its slots given back. A held call keeps it for the whole wait,
		// so it keeps the tool's name only, not the request (its headers).
		name := req.Params.Name
		end := func(res *mcp.CallToolResult, err error) {
			outcome := "ok"
			switch {
			case err != nil:
				outcome = "error"
			case context.Cause(ctx) != nil:
				outcome = "cancelled"
			case res != nil && res.IsError:
				outcome = "tool_error"
			}
			cancel(nil)
			if s != nil {
				s.mu.Lock()
				delete(s.calls, c)
				s.mu.Unlock()
			}
			m.leave(c, owner)
			m.opts.Observer.ToolCall(name, outcome)
		}
		var hc *heldCall
		if holdable {
			hc = &heldCall{m: m, hold: rq.hold, call: c, sess: s, unlink: unlink, end: end, values: values}
			ctx = context.WithValue(ctx, heldKey{}, hc)
		}
		var (
			res      *mcp.CallToolResult
			err      error
			returned bool
		)
		defer func() {
			if hc != nil && hc.taken() {
				// The wait goes on without this goroutine; the held call
				// ends the call (end, then done once its result is written).
				return
			}
			if !returned {
				err = errPanicked // counted as such; mcp-go's recovery answers
			}
			unlink()
			end(res, err)
			close(c.done)
		}()
		res, err = next(ctx, req)
		returned = true
		if hc != nil && hc.taken() {
			return nil, errHeld
		}
		return res, err
	}
}

// errPanicked is the outcome counted for a tool call that panicked.
var errPanicked = errors.New("the tool call panicked")

// callLimit is the cap on an owner's calls in flight for rq (the default
// when rq is nil or sets none).
func callLimit(rq *mcpRequest) int {
	if rq != nil && rq.cfg.MaxCallsPerSubject > 0 {
		return rq.cfg.MaxCallsPerSubject
	}
	return DefaultMaxMCPCallsPerSubject
}

// admit counts call c of owner in flight, held to limit, so that Shutdown
// can end it: false, with nothing counted, when owner already has limit
// calls in flight. A call shut down already is cancelled at once.
func (m *MCP) admit(c *inflight, owner store.Owner, limit int) bool {
	m.callsMu.Lock()
	if m.callsBy[owner] >= limit {
		m.callsMu.Unlock()
		return false
	}
	m.calls[c] = struct{}{}
	m.callsBy[owner]++
	m.callsMu.Unlock()
	if m.closing.Load() {
		c.cancel(errShutdown)
	}
	return true
}

// leave undoes admit.
func (m *MCP) leave(c *inflight, owner store.Owner) {
	m.callsMu.Lock()
	delete(m.calls, c)
	if m.callsBy[owner]--; m.callsBy[owner] <= 0 {
		delete(m.callsBy, owner)
	}
	m.callsMu.Unlock()
}

// sweep drops Streamable HTTP sessions that have been idle for IdleTTL:
// no request for that long and nothing open (a GET stream or a POST with a
// call in flight counts as open, however long it lasts).
func (m *MCP) sweep(ctx context.Context) {
	defer close(m.swept)
	t := time.NewTicker(max(m.opts.IdleTTL/2, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.terminated.prune()
		cutoff := time.Now().Add(-m.opts.IdleTTL).UnixNano()
		m.sessions.Range(func(k, v any) bool {
			s := v.(*mcpSession)
			if s.sse || s.busy.Load() > 0 || s.lastActive.Load() > cutoff {
				return true
			}
			m.terminate(ctx, k.(string))
			return true
		})
	}
}

// terminate ends a Streamable HTTP session the way a client's DELETE does,
// which is the library's one public path that releases all its state.
func (m *MCP) terminate(ctx context.Context, id string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/mcp", nil)
	if err != nil {
		return
	}
	req.Header.Set(server.HeaderKeySessionID, id)
	rec := &discardWriter{h: http.Header{}}
	m.http.ServeHTTP(rec, req)
	m.log.Debug("mcp: idle session closed", zap.Duration("idle_ttl", m.opts.IdleTTL), zap.Int("status", rec.status))
}

type discardWriter struct {
	h      http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }

// Shutdown ends every call and stream, for a process exit: Caddy waits for
// open responses before it exits, and these would otherwise last up to an
// hour. Calls get to send their result first (the question stays open, and
// the agent is told to call get_feedback_result again). ctx bounds the wait.
func (m *MCP) Shutdown(ctx context.Context) {
	m.closing.Store(true)
	// SSE streams that will carry a cancelled call's result: their flush
	// signal is cleared now, and awaited below before the stream is closed.
	var streams []*streamState
	m.sessions.Range(func(_, v any) bool {
		s := v.(*mcpSession)
		s.mu.Lock()
		if s.stream != nil && len(s.calls) > 0 {
			select {
			case <-s.stream.flushed:
			default:
			}
			streams = append(streams, s.stream)
		}
		s.mu.Unlock()
		return true
	})
	m.callsMu.Lock()
	calls := make([]*inflight, 0, len(m.calls))
	for c := range m.calls {
		calls = append(calls, c)
	}
	m.callsMu.Unlock()
	for _, c := range calls {
		c.cancel(errShutdown)
	}
	for _, c := range calls {
		select {
		case <-c.done:
		case <-ctx.Done():
		}
	}
	// The calls have returned; what their streams flush from now on is
	// their results. Forget flushes that came before (a progress message
	// or a keep-alive ping can land between the first drain and a result),
	// so that only the result's flush ends the wait.
	for _, st := range streams {
		select {
		case <-st.flushed:
		default:
		}
	}
	// One bound for all streams, so that many of them cannot add up.
	drain := time.NewTimer(sseDrainWait)
	defer drain.Stop()
wait:
	for _, st := range streams {
		select {
		case <-st.flushed:
		case <-ctx.Done():
			break wait
		case <-drain.C:
			break wait
		}
	}
	m.sse.CloseSessions()
	m.http.CloseSessions(ctx)
}

// Close shuts down and stops background work; the MCP is unusable after.
func (m *MCP) Close() {
	m.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Shutdown(ctx)
		m.stopSweep()
		<-m.swept
		<-m.notified
	})
}

// Sessions is the number of live MCP sessions (for tests and benchmarks).
func (m *MCP) Sessions() int {
	n := 0
	m.sessions.Range(func(any, any) bool { n++; return true })
	return n
}

// reserve takes one of owner's limit session slots, if one is free.
func (m *MCP) reserve(owner store.Owner, limit int) bool {
	m.ownersMu.Lock()
	defer m.ownersMu.Unlock()
	if m.owners[owner] >= limit {
		return false
	}
	if m.owners == nil {
		m.owners = map[store.Owner]int{}
	}
	m.owners[owner]++
	return true
}

// take takes one of owner's slots whatever the limit.
func (m *MCP) take(owner store.Owner) {
	m.ownersMu.Lock()
	defer m.ownersMu.Unlock()
	if m.owners == nil {
		m.owners = map[store.Owner]int{}
	}
	m.owners[owner]++
}

// release gives a slot back.
func (m *MCP) release(owner store.Owner) {
	m.ownersMu.Lock()
	defer m.ownersMu.Unlock()
	if m.owners[owner] <= 1 {
		delete(m.owners, owner)
		return
	}
	m.owners[owner]--
}
