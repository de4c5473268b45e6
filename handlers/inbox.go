package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/ui"
)

// The inbox: /inbox is a signed-in person's open questions (owner subject
// = their id, or addressed to them with `to`) and recently finished ones,
// answered inline through the same exactly-once path as the answer page,
// kept live over one WebSocket, and installable as an app that gets Web
// Push notifications.
//
//	GET    /inbox                        the page (signs in first)
//	GET    /inbox/questions              the list, JSON (also the polling fallback)
//	POST   /inbox/questions/{id}/answer  {"selectedOptions":[…],"freeText":"…","nonce":"…"} or {"answers":{…},…}
//	POST   /inbox/questions/{id}/image/{n}  the asker's image n (POST: kept from cross-site pages)
//	POST   /inbox/questions/{id}/attachments        multipart "file" → the upload's ref (as the page's, by sign-in)
//	DELETE /inbox/questions/{id}/attachments/{aid}  take an upload out again
//	GET    /inbox/ws                     {"type":"changed"} when my questions change, on any instance
//	POST   /inbox/push                   a PushSubscription: turn on notifications on this device
//	DELETE /inbox/push                   {"endpoint":"…"}: turn them off
//	GET    /inbox/sw.js                  the service worker (scope /inbox/)
//	GET    /inbox/manifest.webmanifest   the app manifest

// InboxConfig configures the inbox.
type InboxConfig struct {
	Login identity.Login
	// Push, when set, is the Web Push sender: its public key goes to the
	// page and subscriptions are stored where it reads them.
	Push *notify.Pusher
	// AllowLoopbackPush admits http:// push endpoints on loopback (tests).
	AllowLoopbackPush bool
	// MaxSocketsPerPerson caps one person's open inbox WebSockets; default 10.
	MaxSocketsPerPerson int
}

// Inbox serves the inbox routes.
type Inbox struct {
	h   *Human
	svc *Service
	cfg InboxConfig

	mu      sync.Mutex
	sockets map[*websocket.Conn]struct{} // open inbox sockets, closed by Stop
	perUser map[string]int
	stopped bool
}

// NewInbox builds the inbox over the person's side h.
func NewInbox(h *Human, cfg InboxConfig) (*Inbox, error) {
	if cfg.Login == nil {
		return nil, errors.New("the inbox needs a sign-in (login)")
	}
	if cfg.MaxSocketsPerPerson <= 0 {
		cfg.MaxSocketsPerPerson = 10
	}
	return &Inbox{h: h, svc: h.svc, cfg: cfg, sockets: map[*websocket.Conn]struct{}{}, perUser: map[string]int{}}, nil
}

// Routes are the inbox's endpoints, keyed by ServeMux pattern.
func (in *Inbox) Routes() map[string]http.Handler {
	p := in.h.Protect
	return map[string]http.Handler{
		"/inbox":                                  Methods(in.Page, http.MethodGet, http.MethodHead),
		"/inbox/questions":                        Methods(in.List, http.MethodGet),
		"/inbox/questions/{id}/answer":            p(Methods(in.Answer, http.MethodPost)),
		"/inbox/questions/{id}/image/{n}":         p(Methods(in.Image, http.MethodPost)),
		"/inbox/questions/{id}/attachments":       p(Methods(in.Upload, http.MethodPost)),
		"/inbox/questions/{id}/attachments/{aid}": p(Methods(in.Unattach, http.MethodDelete)),
		"/inbox/ws":                               Methods(in.WS, http.MethodGet),
		"/inbox/push":                             p(Methods(in.Push, http.MethodPost, http.MethodDelete)),
		"/inbox/sw.js":                            Methods(in.asset("sw.js", "../inbox"), http.MethodGet, http.MethodHead),
		"/inbox/manifest.webmanifest":             Methods(in.asset("manifest.webmanifest", ""), http.MethodGet, http.MethodHead),
		"/inbox/{rest...}":                        http.HandlerFunc(UnknownEndpoint),
		"/inbox/questions/{id}/{rest...}":         http.HandlerFunc(UnknownEndpoint),
	}
}

// person is the signed-in person; otherwise it has answered: 401 for the
// JSON endpoints (the page script then reloads into the sign-in), 503 when
// the sign-in could not be checked.
func (in *Inbox) person(w http.ResponseWriter, r *http.Request) (identity.Person, bool) {
	p, err := in.cfg.Login.Person(r)
	switch {
	case err == nil && p.ID != "":
		return p, true
	case err == nil || errors.Is(err, identity.ErrNotSignedIn):
		WriteError(w, http.StatusUnauthorized, "not_signed_in", "sign in to see your inbox: open /inbox in the browser")
	default:
		in.svc.log.Warn("inbox: sign-in could not be checked", zap.Error(err))
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "sign_in_unavailable", "the sign-in could not be checked; retry shortly")
	}
	return identity.Person{}, false
}

// inboxCSP is the answer page's policy, plus the service worker and the
// manifest, both from this site only.
const inboxCSP = pageCSP + "; worker-src 'self'; manifest-src 'self'"

// Page handles GET /inbox: the shell, after sign-in.
func (in *Inbox) Page(w http.ResponseWriter, r *http.Request) {
	p, err := in.cfg.Login.Person(r)
	if err != nil || p.ID == "" {
		if err != nil && !errors.Is(err, identity.ErrNotSignedIn) {
			in.svc.log.Warn("inbox: sign-in could not be checked", zap.Error(err))
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusServiceUnavailable, "sign_in_unavailable", "the sign-in could not be checked; retry shortly")
			return
		}
		in.cfg.Login.SignIn(w, r, "/inbox")
		return
	}
	q := r.URL.Query()
	d := ui.InboxData{
		Lang:       ui.NegotiateLang(q.Get("lang"), r.Header.Get("Accept-Language")),
		Theme:      ui.ParseTheme(q.Get("theme")),
		StaticBase: "." + StaticPrefix,
		Person:     p.Name,
	}
	if d.Person == "" {
		d.Person = p.ID
	}
	var buf bytes.Buffer
	if err := ui.RenderInbox(&buf, d); err != nil {
		in.svc.log.Error("rendering the inbox failed", zap.Error(err))
		WriteError(w, http.StatusInternalServerError, "internal_error", "the inbox could not be rendered")
		return
	}
	setPageHeaders(w, r)
	w.Header().Set("Content-Security-Policy", inboxCSP)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Vary", "Accept-Language")
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// InboxItem is one question in the inbox: the answer page's view, and the
// asking agent's name.
type InboxItem struct {
	PageView
	Agent string `json:"agent,omitempty"`
	// For is the owner's person id when the question is someone else's,
	// addressed to me with `to`; empty for my own.
	For string `json:"for,omitempty"`
}

// InboxList is GET /inbox/questions.
type InboxList struct {
	Person    identity.Person `json:"person"`
	Now       time.Time       `json:"now"`
	Questions []InboxItem     `json:"questions"`
	// PushKey is the VAPID public key to subscribe with; "" when push is off.
	PushKey string `json:"pushKey,omitempty"`
}

// List handles GET /inbox/questions: my questions, newest first.
func (in *Inbox) List(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	p, ok := in.person(w, r)
	if !ok {
		return
	}
	list, err := in.svc.core.Inbox(r.Context(), p.ID)
	if err != nil {
		in.svc.storeError(w, r, "inbox", err)
		return
	}
	out := InboxList{Person: p, Now: in.svc.cfg.Now().UTC(), Questions: make([]InboxItem, 0, len(list)), PushKey: in.cfg.Push.PublicKey()}
	for _, s := range list {
		item := InboxItem{PageView: in.h.viewOf(s), Agent: AgentName(s)}
		if s.Owner.Subject != p.ID {
			item.For = s.Owner.Subject
		}
		out.Questions = append(out.Questions, item)
	}
	writeJSON(w, http.StatusOK, out)
}

// AgentName is the asking agent's display name, as the agent gave it in
// its metadata (agent_name, agentName or agent); "" otherwise.
func AgentName(s *store.Session) string {
	if len(s.Metadata) == 0 {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(s.Metadata, &m) != nil {
		return ""
	}
	for _, k := range []string{"agent_name", "agentName", "agent"} {
		var v string
		if json.Unmarshal(m[k], &v) == nil && strings.TrimSpace(v) != "" {
			return notify.FirstLine(v, 60)
		}
	}
	return ""
}

// Answer handles POST /inbox/questions/{id}/answer: the answer page's
// submit, for a question of mine, proven by my sign-in instead of the
// link's token. Someone else's question is the same 404 as none.
func (in *Inbox) Answer(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	p, ok := in.person(w, r)
	if !ok {
		return
	}
	raw, ok := readJSONBody(w, r)
	if !ok {
		return
	}
	sess, ok := in.sessionFor(w, r, p)
	if !ok {
		return
	}
	req, verr := validate.DecodeSubmit(raw)
	if verr != nil {
		writeValidation(w, verr)
		return
	}
	result, err := in.svc.core.Answer(r.Context(), sess, req, feedback.Via{How: feedback.ViaInbox, By: p.ID})
	if err != nil {
		in.svc.answerFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, SubmitResponse{SessionID: result.ID, Status: result.Status, SubmittedAt: result.Result.SubmittedAt})
}

// Image handles POST /inbox/questions/{id}/image/{n}: the asker's image n
// of a question I may see (mine, or addressed to me), with the answer
// page's headers; the inbox shows it from a blob: URL. Someone else's
// question is the same 404 as none. POST, with cross-origin protection,
// so another site's page cannot embed it with my sign-in cookie.
func (in *Inbox) Image(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	sess, ok := in.myQuestion(w, r)
	if !ok {
		return
	}
	in.h.writeImage(w, r, sess)
}

// Upload handles POST /inbox/questions/{id}/attachments: the answer page's
// upload for a question I may answer (mine, or addressed to me), proven by
// my sign-in, so the multipart body is the "file" field alone. Someone
// else's question is the same 404 as none, answered before the file is
// read.
func (in *Inbox) Upload(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	p, ok := in.person(w, r)
	if !ok {
		return
	}
	in.h.receiveUpload(w, r, `the body must be one multipart field, "file": the file to attach (the inbox needs no token)`, func(*multipart.Reader, string) (*store.Session, bool) {
		return in.sessionFor(w, r, p)
	})
}

// Unattach handles DELETE /inbox/questions/{id}/attachments/{aid}: 204,
// also for an upload that is already gone, as on the answer page.
func (in *Inbox) Unattach(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	sess, ok := in.myQuestion(w, r)
	if !ok {
		return
	}
	in.h.removeUpload(w, r, sess)
}

// myQuestion is question {id} if the signed-in person may see it;
// otherwise it has answered (sign-in needed, or 404 as for none).
func (in *Inbox) myQuestion(w http.ResponseWriter, r *http.Request) (*store.Session, bool) {
	p, ok := in.person(w, r)
	if !ok {
		return nil, false
	}
	return in.sessionFor(w, r, p)
}

// sessionFor is question {id} if p may see it; otherwise it has answered
// (404 for someone else's, as for none).
func (in *Inbox) sessionFor(w http.ResponseWriter, r *http.Request, p identity.Person) (*store.Session, bool) {
	sess, err := in.svc.core.GetForPerson(r.Context(), p.ID, r.PathValue("id"))
	if err != nil {
		in.svc.storeError(w, r, "get", err)
		return nil, false
	}
	return sess, true
}

// Push handles POST /inbox/push (a PushSubscription.toJSON() of this
// device) and DELETE /inbox/push ({"endpoint":"…"}).
func (in *Inbox) Push(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	if in.cfg.Push == nil {
		WriteError(w, http.StatusNotFound, "push_off", "notifications are not turned on for this site (the push option)")
		return
	}
	p, ok := in.person(w, r)
	if !ok {
		return
	}
	raw, ok := readJSONBody(w, r)
	if !ok {
		return
	}
	var sub notify.PushSubscription
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&sub); err != nil || dec.More() {
		WriteError(w, http.StatusBadRequest, "invalid_request", `the body must be one JSON object: the browser's PushSubscription {"endpoint":"…","keys":{"p256dh":"…","auth":"…"}} (to turn off: {"endpoint":"…"})`)
		return
	}
	subs := in.cfg.Push.Subscriptions()
	if r.Method == http.MethodDelete {
		if sub.Endpoint == "" {
			WriteError(w, http.StatusBadRequest, "invalid_request", `"endpoint" is required: the subscription to turn off`)
			return
		}
		if err := subs.Remove(r.Context(), p.ID, notify.SubscriptionID(sub.Endpoint)); err != nil {
			in.svc.storeError(w, r, "push", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := notify.CheckSubscription(sub, in.cfg.AllowLoopbackPush); err != nil {
		WriteError(w, http.StatusBadRequest, "invalid_subscription", err.Error())
		return
	}
	id, err := subs.Add(r.Context(), p.ID, sub)
	switch {
	case errors.Is(err, notify.ErrTooManySubscriptions):
		WriteError(w, http.StatusConflict, "too_many_devices", err.Error()+"; turn notifications off on a device you no longer use")
		return
	case err != nil:
		in.svc.storeError(w, r, "push", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

// asset serves an embedded file of the app at a fixed path. The service
// worker at /inbox/sw.js would control /inbox/ only; Service-Worker-Allowed
// (resolved against the script's URL, so a path prefix is kept) lets it
// control /inbox itself, the page.
func (in *Inbox) asset(name, swScope string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := ui.LookupAsset(name)
		if !ok {
			WriteError(w, http.StatusNotFound, "not_found", "no such file")
			return
		}
		hd := w.Header()
		hd.Set("Content-Type", a.ContentType)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cache-Control", "no-cache")
		if swScope != "" {
			hd.Set("Service-Worker-Allowed", swScope)
		}
		http.ServeContent(w, r, a.Name, time.Time{}, bytes.NewReader(a.Body))
	}
}

// WS handles GET /inbox/ws: one socket per open inbox. Whenever one of my
// questions (owned or addressed to me) is created or changes on any
// instance sharing the store, it sends {"type":"changed"}; the page then
// fetches the list again. Signals coalesce, so a burst costs one fetch.
func (in *Inbox) WS(w http.ResponseWriter, r *http.Request) {
	p, ok := in.person(w, r)
	if !ok {
		return
	}
	if !in.h.originAllowed(r) {
		WriteError(w, http.StatusForbidden, "origin_not_allowed", "pages of another origin may not open this inbox")
		return
	}
	in.mu.Lock()
	full := in.stopped || in.perUser[p.ID] >= in.cfg.MaxSocketsPerPerson
	if !full {
		in.perUser[p.ID]++
	}
	in.mu.Unlock()
	if full {
		w.Header().Set("Retry-After", "5")
		WriteError(w, http.StatusTooManyRequests, "too_many_sockets", "too many inboxes are open for you; close one, or this page polls instead")
		return
	}
	release := func() {
		in.mu.Lock()
		if in.perUser[p.ID]--; in.perUser[p.ID] <= 0 {
			delete(in.perUser, p.ID)
		}
		in.mu.Unlock()
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		release()
		return
	}
	c.SetReadLimit(wsReadLimit)
	in.mu.Lock()
	in.sockets[c] = struct{}{}
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.sockets, c)
		in.mu.Unlock()
		release()
	}()
	in.svc.cfg.Observer.WebSockets(1)
	defer in.svc.cfg.Observer.WebSockets(-1)

	type change struct {
		Type string `json:"type"`
	}
	ctx := c.CloseRead(context.Background())
	// My questions' announcements from every instance (and a signal when
	// the store's subscription comes back, since some may have been lost).
	changed := in.svc.core.Hub().WatchPerson(ctx, p.ID)
	ping := time.NewTicker(25 * time.Second)
	defer ping.Stop()
	write := func(v any) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		b, _ := json.Marshal(v)
		return c.Write(wctx, websocket.MessageText, b)
	}
	if write(change{Type: "ready"}) != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				return // the store closed, or the socket did
			}
			if write(change{Type: "changed"}) != nil {
				return
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
		}
	}
}

// Stop closes every inbox socket (1001 on exit, 1012 on a reload); pages
// reconnect.
func (in *Inbox) Stop(exiting bool) {
	in.mu.Lock()
	in.stopped = exiting
	conns := make([]*websocket.Conn, 0, len(in.sockets))
	for c := range in.sockets {
		conns = append(conns, c)
	}
	in.mu.Unlock()
	code, reason := statusServiceRestart, "configuration reloaded; reconnect"
	if exiting {
		code, reason = statusGoingAway, "server shutting down"
	}
	for _, c := range conns {
		_ = c.Close(code, reason)
	}
}
