package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pagesec"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/ui"
)

// The person's side: the answer page, its JSON view and submit, its static
// files and the WebSocket. The page shell carries no session data; see
// package ui for why (the capability token lives in the link's fragment).
//
//	GET  /feedback/{id}              the shell (same bytes for every well-formed id)
//	POST /feedback/{id}/view         {"token"} → the session as the person sees it
//	POST /feedback/{id}/submit       {"token","answer":{selectedOptions,freeText,nonce,attachments}}
//	POST /feedback/{id}/attachments  multipart "token", "file" (attach.go)
//	GET  /feedback-static/{name}     CSS and JS
//	GET  /ws/{id}                    live updates (ws.go)
//
// The page sends its token in request bodies, not in X-Feedback-Token as
// REST clients may: Caddy's access log records request headers (cloned
// before any handler runs, so a handler cannot redact them) but never
// bodies. The page's submit is the core's Answer, as the REST submit's is:
// exactly once, idempotent per nonce.

// Defaults for HumanConfig.
const (
	DefaultMaxSocketsPerSession = 10
	DefaultMaxSocketsPerSubject = 20
	// StaticPrefix is where the page's CSS and JS are served.
	StaticPrefix = "/feedback-static/"
)

// pageCSP allows only this site's own script, style and connections (which
// covers the same-origin ws:/wss: of the live updates), no plugins, no
// framing, no remote images (the agent's Markdown may name some: they stay
// unloaded, so they cannot track the person; the asker's own images come
// from this site as blob: URLs), and no inline script at all.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data: blob:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// pagePermissions turns off the powerful browser features the page never
// uses, so that nothing an agent writes could ask for them.
const pagePermissions = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), display-capture=()"

// HumanConfig configures the person's side.
type HumanConfig struct {
	// AllowedOrigins are other origins (scheme://host[:port]) whose pages may
	// open WebSockets and post answers. The site's own origin always may.
	AllowedOrigins []string
	// MaxSocketsPerSession caps open WebSockets per session (all watchers).
	MaxSocketsPerSession int
	// MaxSocketsPerSubject caps open WebSockets per JWT subject.
	MaxSocketsPerSubject int

	// The timings below are fixed in production; tests shorten them.

	// AuthTimeout is how long a browser has to send its token. Default 3 s:
	// the page sends it as soon as the socket opens, and a socket that has
	// not yet sent it holds a waiting slot.
	AuthTimeout time.Duration
	// PingInterval is how often an idle socket is pinged. Default 30 s.
	PingInterval time.Duration
	// WriteTimeout bounds every write and ping. Default 10 s.
	WriteTimeout time.Duration
}

// Human serves the person's side. Build it with NewHuman.
type Human struct {
	svc            *Service
	cfg            HumanConfig
	cop            *http.CrossOriginProtection
	originPatterns []string
	sockets        *registry
}

// NewHuman builds the person's side on top of svc.
func NewHuman(svc *Service, cfg HumanConfig) (*Human, error) {
	if cfg.MaxSocketsPerSession <= 0 {
		cfg.MaxSocketsPerSession = DefaultMaxSocketsPerSession
	}
	if cfg.MaxSocketsPerSubject <= 0 {
		cfg.MaxSocketsPerSubject = DefaultMaxSocketsPerSubject
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = 3 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	h := &Human{svc: svc, cfg: cfg, cop: http.NewCrossOriginProtection()}
	for _, o := range cfg.AllowedOrigins {
		canon, err := CanonicalOrigin(o)
		if err != nil {
			return nil, err
		}
		if err := h.cop.AddTrustedOrigin(canon); err != nil {
			return nil, fmt.Errorf("allowed_origins: %w", err)
		}
		// A pattern with "://" is matched against scheme://host; canon has
		// no glob characters, so this is an exact, case-insensitive match.
		h.originPatterns = append(h.originPatterns, canon)
	}
	h.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusForbidden, "cross_origin_request",
			"cross-site requests to this endpoint are refused; answer from the page the link opens")
	}))
	h.sockets = newRegistry(cfg.MaxSocketsPerSession, cfg.MaxSocketsPerSubject)
	return h, nil
}

// CanonicalOrigin checks an allowed_origins entry and returns it in the
// form browsers send in Origin: scheme://host[:port], lower case.
func CanonicalOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(u.Host, "*?[]\\") {
		return "", fmt.Errorf("allowed_origins: %q must be an origin like https://app.example.com or http://localhost:8080 (scheme, host and optional port; no path, no wildcards)", s)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// Protect refuses cross-site browser requests with unsafe methods (a form
// or fetch posted from another site). Requests without Sec-Fetch-Site and
// Origin, such as agents' and apps', pass.
func (h *Human) Protect(next http.Handler) http.Handler { return h.cop.Handler(next) }

// Stop closes every open WebSocket: 1001 (going away) when the process
// exits, 1012 (service restart) on a config reload. Pages reconnect.
func (h *Human) Stop(exiting bool) {
	if exiting {
		h.sockets.closeAll(statusGoingAway, "server shutting down")
	} else {
		h.sockets.closeAll(statusServiceRestart, "configuration reloaded; reconnect")
	}
}

// OpenSockets is the number of WebSockets currently open.
func (h *Human) OpenSockets() int { return h.sockets.count() }

// setPageHeaders are the headers of everything the person's browser gets
// from the page and its view: the page holds a secret in its URL and
// shows agent-written text.
func setPageHeaders(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	pagesec.Set(hd, r, pageCSP) // the link is a secret
	hd.Set("Permissions-Policy", pagePermissions)
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// Page handles GET /feedback/{id}: the shell, in the language and theme
// asked for. A malformed id gets the "link does not work" page with 404;
// a well-formed one gets the shell whether or not it exists.
func (h *Human) Page(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	d := ui.PageData{
		Lang:       ui.NegotiateLang(q.Get("lang"), r.Header.Get("Accept-Language")),
		Theme:      ui.ParseTheme(q.Get("theme")),
		StaticBase: ".." + StaticPrefix,
	}
	status := http.StatusOK
	if feedback.ValidID(id) {
		d.SessionID = id
	} else {
		status = http.StatusNotFound
	}
	var buf bytes.Buffer
	if err := ui.RenderPage(&buf, d); err != nil {
		h.svc.log.Error("rendering the answer page failed", zap.Error(err))
		WriteError(w, http.StatusInternalServerError, "internal_error", "the answer page could not be rendered")
		return
	}
	setPageHeaders(w, r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Vary", "Accept-Language")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// PageView is the session as the person's page sees it: no owner, no
// token hash, and the message already rendered to safe HTML.
type PageView struct {
	SessionID   string       `json:"sessionId"`
	Status      store.Status `json:"status"`
	MessageHTML string       `json:"messageHtml"`
	Options     []string     `json:"options"`
	// OptionDetails describe Options in the same order, when the asker
	// gave descriptions or a recommendation; Preselect says to start with
	// the recommended one selected.
	OptionDetails []store.Option `json:"optionDetails,omitempty"`
	Preselect     bool           `json:"preselect,omitempty"`
	// Questions, when present, make the page a form of several questions.
	Questions []PageQuestion `json:"questions,omitempty"`
	// Images describe the asker's images; the page fetches image n from
	// …/image/n with its token.
	Images        []store.ImageRef `json:"images,omitempty"`
	MultiSelect   bool             `json:"multiSelect"`
	AllowFreeText bool             `json:"allowFreeText"`
	MaxFreeText   int              `json:"maxFreeText"`
	Metadata      []MetaEntry      `json:"metadata"`
	CreatedAt     time.Time        `json:"createdAt"`
	ExpiresAt     time.Time        `json:"expiresAt"`
	Now           time.Time        `json:"now"`
	Result        *store.Result    `json:"result,omitempty"`
	// Attach, when set, lets the person attach files: the page checks
	// size, count and type before it uploads (the server checks again).
	Attach *AttachView `json:"attach,omitempty"`
}

// AttachView is what the page needs to know of the attachment rules.
type AttachView struct {
	MaxSize  int      `json:"maxSize"`
	MaxFiles int      `json:"maxFiles"`
	Types    []string `json:"types"`
}

// PageQuestion is one question of a form as the page shows it: the
// message rendered to safe HTML like the main one.
type PageQuestion struct {
	store.Question
	MessageHTML string `json:"messageHtml"`
}

// MetaEntry is one top-level member of the agent's metadata, as display text.
type MetaEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// pageBody is what the page posts: the token, and for a submit the answer
// in the REST submit's shape.
type pageBody struct {
	Token  string          `json:"token"`
	Answer json.RawMessage `json:"answer"`
}

// readPageBody reads a page POST strictly: JSON object, known members only,
// nothing after it.
func readPageBody(w http.ResponseWriter, r *http.Request) (*pageBody, bool) {
	raw, ok := readJSONBody(w, r)
	if !ok {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b pageBody
	if err := dec.Decode(&b); err != nil || dec.More() {
		WriteError(w, http.StatusBadRequest, "invalid_request", `the body must be one JSON object {"token":"…"} (and "answer" for a submit)`)
		return nil, false
	}
	return &b, true
}

// sessionForToken loads id if tok is its capability token. Unknown id,
// wrong token and no token all get the same 404, so the answer says
// nothing about which ids exist.
func (h *Human) sessionForToken(w http.ResponseWriter, r *http.Request, tok string) (*store.Session, bool) {
	sess, err := h.svc.core.GetByToken(r.Context(), r.PathValue("id"), tok)
	if err != nil {
		h.svc.storeError(w, r, "get", err)
		return nil, false
	}
	return sess, true
}

// tokenOnly reads a body that is only {"token":"…"} and loads question {id}
// with it; what names the request in the error for anything more.
func (h *Human) tokenOnly(w http.ResponseWriter, r *http.Request, what string) (*store.Session, bool) {
	b, ok := readPageBody(w, r)
	if !ok {
		return nil, false
	}
	if len(b.Answer) != 0 {
		WriteError(w, http.StatusBadRequest, "invalid_request", what+` takes only {"token":"…"}`)
		return nil, false
	}
	return h.sessionForToken(w, r, b.Token)
}

// View handles POST /feedback/{id}/view with {"token":"…"}.
func (h *Human) View(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	sess, ok := h.tokenOnly(w, r, "the view")
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, h.viewOf(sess))
}

// Submit handles POST /feedback/{id}/submit with {"token","answer"}: the
// page's answer, through the same checks and store path as the REST submit,
// and with the same responses.
func (h *Human) Submit(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	b, ok := readPageBody(w, r)
	if !ok {
		return
	}
	// The token is checked before the answer is looked at, as the REST
	// submit does, so a stranger learns nothing from validation errors.
	sess, ok := h.sessionForToken(w, r, b.Token)
	if !ok {
		return
	}
	if len(b.Answer) == 0 || string(b.Answer) == "null" {
		WriteError(w, http.StatusBadRequest, "invalid_request", `"answer" is required: {"selectedOptions":[…],"freeText":"…","nonce":"…"}`)
		return
	}
	req, verr := validate.DecodeSubmit(b.Answer)
	if verr != nil {
		// The validator speaks of "the request body"; here it is the answer.
		WriteError(w, http.StatusBadRequest, verr.Code, "answer: "+verr.Message)
		return
	}
	result, err := h.svc.core.Answer(r.Context(), sess, req, feedback.Via{How: feedback.ViaLink})
	if err != nil {
		h.svc.answerFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, SubmitResponse{SessionID: result.ID, Status: result.Status, SubmittedAt: result.Result.SubmittedAt})
}

func (h *Human) viewOf(sess *store.Session) PageView {
	v := PageViewOf(sess, h.svc.cfg.Now().UTC())
	if rules := h.svc.core.AttachRules(); rules.MaxFiles > 0 {
		v.Attach = &AttachView{MaxSize: rules.MaxSize, MaxFiles: rules.MaxFiles, Types: rules.Types}
	}
	return v
}

// PageViewOf is sess as the person sees it at now: on the answer page and
// in the MCP Apps view alike.
func PageViewOf(sess *store.Session, now time.Time) PageView {
	opts := sess.PredefinedOptions
	if opts == nil {
		opts = []string{}
	}
	var (
		details   []store.Option
		preselect bool
		questions []PageQuestion
		images    []store.ImageRef
	)
	if f := sess.Form; f != nil {
		details, preselect, images = f.Options, f.PreselectRecommended, f.Images
		for _, q := range f.Questions {
			questions = append(questions, PageQuestion{Question: q, MessageHTML: ui.RenderMarkdown(q.Message)})
		}
	}
	return PageView{
		OptionDetails: details,
		Preselect:     preselect,
		Questions:     questions,
		Images:        images,
		SessionID:     sess.ID,
		Status:        sess.Status,
		MessageHTML:   ui.RenderMarkdown(sess.Message),
		Options:       opts,
		MultiSelect:   sess.MultiSelect,
		AllowFreeText: sess.AllowFreeText,
		MaxFreeText:   validate.MaxFreeTextChars,
		Metadata:      metadataEntries(sess.Metadata),
		CreatedAt:     sess.CreatedAt,
		ExpiresAt:     sess.ExpiresAt,
		Now:           now,
		Result:        sess.Result,
	}
}

// metadataEntries turns the agent's metadata object into sorted key/value
// display strings: strings as they are, anything else as compact JSON.
// Control and bidirectional-override characters are shown as visible
// escapes, so metadata can neither reorder text nor hide part of itself.
func metadataEntries(raw json.RawMessage) []MetaEntry {
	out := []MetaEntry{}
	if len(raw) == 0 {
		return out
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return out
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := compactJSON(m[k])
		var s string
		if json.Unmarshal(m[k], &s) == nil {
			v = s
		}
		out = append(out, MetaEntry{Key: visible(k), Value: visible(v)})
	}
	return out
}

// compactJSON re-encodes a value without the \u003c-style escapes an agent's
// encoder may have used, so that it reads as it was meant; the page sets it
// as text, so nothing in it is markup. Numbers keep their digits.
func compactJSON(raw json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(raw)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return string(raw)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// visible replaces control characters, bidirectional controls and other
// invisible format characters with a readable ⟨U+XXXX⟩.
func visible(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError, unicode.IsControl(r) && r != '\n' && r != '\t', unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, "⟨U+%04X⟩", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// imageCSP (images and attachment downloads alike): such a response is
// never a document that could run anything, even when opened on its own.
const imageCSP = "default-src 'none'; sandbox"

// Image handles POST /feedback/{id}/image/{n} with {"token":"…"}: the
// asker's image n, for the page, which shows it from a blob: URL (the
// token stays out of URLs, as for the view). The type is the one found
// from the bytes at create, and the browser may not guess another.
func (h *Human) Image(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	sess, ok := h.tokenOnly(w, r, "an image")
	if !ok {
		return
	}
	h.writeImage(w, r, sess)
}

// writeImage answers with sess's image number {n} of the path, for the
// page and the inbox alike: the type found from the bytes at create, a
// policy under which it can run nothing even opened on its own, and no
// guessing of another type.
func (h *Human) writeImage(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || strconv.Itoa(n) != r.PathValue("n") {
		WriteError(w, http.StatusNotFound, "not_found", "no such image")
		return
	}
	data, mt, err := h.svc.core.Image(r.Context(), sess, n)
	if err != nil {
		h.svc.storeFailed(r, "image", err)
		if errors.Is(err, store.ErrNotFound) {
			WriteError(w, http.StatusNotFound, "not_found", "no such image, or it is gone with its question")
			return
		}
		writeStoreError(w, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", mt)
	hd.Set("Content-Security-Policy", imageCSP)
	hd.Set("Content-Disposition", "inline")
	hd.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// Static handles GET /feedback-static/{name}. Names carry a content hash
// in ?v=, so a versioned URL may be cached for good.
func (h *Human) Static(w http.ResponseWriter, r *http.Request) {
	a, ok := ui.LookupAsset(r.PathValue("name"))
	if !ok {
		WriteError(w, http.StatusNotFound, "not_found", "no such file")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ContentType)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("ETag", `"`+a.Version+`"`)
	if r.URL.Query().Get("v") == a.Version {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, a.Name, time.Time{}, bytes.NewReader(a.Body))
}
