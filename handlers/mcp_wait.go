package handlers

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// notificationSettle is how long to let a notification sent just before a
// result leave first. mcp-go's Streamable HTTP forwarder can drop a
// notification queued right before the handler returns (it loses the race
// with the final response); a short pause avoids that.
const notificationSettle = 20 * time.Millisecond

// waitResult waits, through the core's Await, until the question is no
// longer pending or until, then returns its outcome. Progress and the
// optional elicitation run beside the wait.
// decorate, when set, amends a result before it is returned (a held call
// returns it later, from another goroutine).
func (m *MCP) waitResult(ctx context.Context, rq *mcpRequest, req mcp.CallToolRequest, sess *store.Session, until time.Time, link string,
	decorate func(*mcp.CallToolResult)) (*mcp.CallToolResult, error) {
	if until.After(sess.ExpiresAt) {
		until = sess.ExpiresAt
	}
	// A waiting call keeps only what it needs: the elicitation (when there
	// is one) has its own context, progress builds its text when it sends,
	// and of the request progress keeps its token only.
	modern := server.IsModernRequest(ctx)
	if modern {
		// 2026-07-28: no server-to-client requests; the elicitation goes
		// out as an input-required result, once (mcp_stateless.go).
		if res := m.inputRequired(ctx, rq, req, sess, until, link); res != nil {
			return res, nil
		}
	}
	w := &waiting{m: m, rq: rq, sess: sess, until: until, link: link, started: time.Now(), decorate: decorate}
	w.prog = newProgress(ctx, m.server, req, sess, link, until)
	if hc := heldFrom(ctx); hc != nil && sess.Status == store.StatusPending && !modern &&
		hc.take(server.ClientSessionFromContext(ctx)) {
		// The wait goes on without the request (mcp_held.go), in a
		// goroutine that only waits; progress, and the elicitation, go to
		// the call's own stream. The elicitation is sent only now, after
		// the takeover, so that it cannot race it on the request's stream.
		w.prog.notify = hc.notify
		w.el = m.startElicitation(ctx, rq, sess, link, hc)
		go hc.run(ctx, w)
		return nil, errHeld
	}
	if !modern {
		w.el = m.startElicitation(ctx, rq, sess, link, nil)
	}
	defer w.el.stop()
	cur, err := w.wait(ctx)
	return w.outcome(ctx, cur, err)
}

// waiting is one call's wait, split in two so that the frames a waiting
// goroutine keeps while it waits are small ones (a held call's goroutine
// is all it keeps; see mcp_held.go): wait, then outcome.
type waiting struct {
	m        *MCP
	rq       *mcpRequest
	prog     *progress
	sess     *store.Session
	until    time.Time
	link     string
	el       *elicitation
	started  time.Time
	decorate func(*mcp.CallToolResult)
}

// wait sends the first progress and waits, through the core's Await, until
// the question is no longer pending or until.
func (w *waiting) wait(ctx context.Context) (*store.Session, error) {
	w.prog.send()
	// Progress rides on the waiting goroutine: a waiting call costs no
	// goroutine of its own for it.
	return w.rq.svc.core.AwaitEvery(ctx, w.sess.ID, w.until, feedback.Every{D: w.m.opts.ProgressEvery, Fn: w.prog.tick})
}

// outcome is the call's result once the wait has ended.
func (w *waiting) outcome(ctx context.Context, cur *store.Session, err error) (*mcp.CallToolResult, error) {
	res, err := w.result(ctx, cur, err)
	if res != nil && w.decorate != nil {
		w.decorate(res)
	}
	return res, err
}

func (w *waiting) result(ctx context.Context, cur *store.Session, err error) (*mcp.CallToolResult, error) {
	rq, sess, link := w.rq, w.sess, w.link
	if cur != nil {
		sess = cur
	}
	ended := func(reason string) {
		rq.svc.log.Debug("mcp: stopped waiting", zap.String("session", sess.ID), zap.String("reason", reason), zap.Duration("waited", time.Since(w.started)))
	}
	switch {
	case err == nil && sess.Status.Terminal():
		ended(string(sess.Status))
		if sess.Status == store.StatusSubmitted && w.el.complete(context.WithoutCancel(ctx)) {
			settle(ctx)
		}
		return answerResult(context.WithoutCancel(ctx), rq, sess, link, false), nil
	case err == nil:
		ended("wait elapsed")
		return outcomeResult(sess, link, true), nil
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		if errors.Is(cause, errShutdown) {
			ended("server shutting down")
			res := outcomeResult(sess, link, true)
			res.Content = []mcp.Content{mcp.NewTextContent(fmt.Sprintf(
				"The server is restarting, so this wait stopped; the question is still open. Call get_feedback_result with {\"sessionId\":%q,\"wait\":%d} to keep waiting.",
				sess.ID, secondsLeft(sess.ExpiresAt)))}
			return res, nil
		}
		ended("client went away: " + cause.Error())
		return nil, ctx.Err()
	case errors.Is(err, feedback.ErrStoreClosed):
		// The store was closed under us (its configuration was replaced);
		// the question lives on in whatever store is configured now, so
		// tell the agent to ask again.
		ended("store closed")
		return outcomeResult(sess, link, true), nil
	default:
		ended("store error")
		return storeToolError(rq, "get", err), nil
	}
}

// settle gives a just-queued notification time to be written before the
// result is (see notificationSettle).
func settle(ctx context.Context) {
	t := time.NewTimer(notificationSettle)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// progress sends notifications/progress for one waiting call, when the
// client asked for progress (sent a progressToken).
type progress struct {
	ctx     context.Context
	srv     *server.MCPServer
	token   mcp.ProgressToken
	started time.Time
	total   float64
	last    float64
	link    string // the answer link, or "" (link_to_agent off)
	id      string
	until   time.Time
	// notify, when set, sends instead of the session's notification
	// channel (a held call writes to its own stream).
	notify func(context.Context, string, map[string]any)
}

func newProgress(ctx context.Context, srv *server.MCPServer, req mcp.CallToolRequest, sess *store.Session, link string, until time.Time) *progress {
	p := &progress{ctx: ctx, srv: srv, started: time.Now(), until: until, last: -1, link: link, id: sess.ID}
	if req.Params.Meta != nil {
		p.token = req.Params.Meta.ProgressToken
	}
	p.total = until.Sub(p.started).Seconds()
	return p
}

// tick is the waiting loop's periodic work: one progress message.
func (p *progress) tick() bool {
	p.send()
	return true
}

// send reports seconds waited out of the total. The value must grow with
// every notification, so it is nudged when two land in the same millisecond.
func (p *progress) send() {
	if p.token == nil {
		return
	}
	v := float64(time.Since(p.started).Milliseconds()) / 1000
	if v <= p.last {
		v = p.last + 0.001
	}
	p.last = v
	var msg string
	if p.link != "" {
		msg = fmt.Sprintf("Waiting for the user to answer at %s (%d seconds left)", p.link, secondsLeft(p.until))
	} else {
		msg = fmt.Sprintf("Waiting for the user to answer question %s (%d seconds left)", p.id, secondsLeft(p.until))
	}
	params := map[string]any{
		"progressToken": p.token,
		"progress":      v,
		"total":         p.total,
		"message":       msg,
	}
	if p.notify != nil {
		p.notify(p.ctx, "notifications/progress", params)
		return
	}
	_ = p.srv.SendNotificationToClient(p.ctx, "notifications/progress", params)
}

// elicitation is the optional second channel to the person: the client
// shows the link (URL mode) or asks the question itself (form mode).
type elicitation struct {
	m      *MCP
	cs     server.ClientSession
	id     string // URL mode: the elicitationId to complete
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// A held call's elicitation is its own request on the call's stream
	// (mcp_held.go): held is the call, rpcID the request's JSON-RPC id,
	// reply what the client's answer is handed to.
	held  *heldCall
	rpcID string
	reply func(*mcp.ElicitationResult, error)
}

// startElicitation sends an elicitation when this configuration allows it
// and the client declared it can take one: through mcp-go on the request's
// stream, or, for a call held off its request (hc), on the call's own
// stream. It runs beside the wait; the wait's end (ctx) ends it. A nil
// *elicitation is valid and does nothing.
func (m *MCP) startElicitation(ctx context.Context, rq *mcpRequest, sess *store.Session, link string, hc *heldCall) *elicitation {
	if rq.cfg.Elicitation == ElicitationOff {
		return nil
	}
	cs := server.ClientSessionFromContext(ctx)
	if _, ok := cs.(server.SessionWithElicitation); !ok {
		return nil // legacy SSE sessions cannot carry one
	}
	info, ok := cs.(server.SessionWithClientInfo)
	if !ok {
		return nil
	}
	caps := info.GetClientCapabilities().Elicitation
	if caps == nil {
		return nil
	}
	e := &elicitation{m: m, cs: cs}
	var params mcp.ElicitationParams
	switch mode := elicitMode(rq.cfg.Elicitation, caps, sess, link); mode {
	case ElicitationForm:
		params = mcp.ElicitationParams{Mode: mcp.ElicitationModeForm, Message: sess.Message, RequestedSchema: formSchema(sess)}
	case ElicitationURL:
		e.id = sess.ID + "." + rand.Text()[:8]
		params = mcp.ElicitationParams{Mode: mcp.ElicitationModeURL, ElicitationID: e.id, URL: link,
			Message: "The agent is asking you a question. Open this page to answer it:\n\n" + clip(sess.Message, 300)}
	default:
		return nil
	}
	ctx, e.cancel = context.WithCancel(ctx)
	log := rq.svc.log.With(zap.String("session", sess.ID))
	e.reply = func(res *mcp.ElicitationResult, err error) { m.elicited(ctx, rq, sess, params.Mode, res, err, log) }
	if hc != nil {
		if err := hc.elicit(e, params); err != nil {
			log.Debug("mcp: elicitation not sent", zap.Error(err))
			e.cancel()
			return nil
		}
		return e
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.reply(m.server.RequestElicitation(ctx, mcp.ElicitationRequest{Params: params}))
	}()
	return e
}

// elicited is what becomes of the client's reply to an elicitation: a
// URL one is only logged (the person answers on the page); an accepted
// form is submitted like an answer from the page, and the waiting loop
// then sees it like any other.
func (m *MCP) elicited(ctx context.Context, rq *mcpRequest, sess *store.Session, mode string, res *mcp.ElicitationResult, err error, log *zap.Logger) {
	switch {
	case err != nil:
		if ctx.Err() == nil && mode == mcp.ElicitationModeURL {
			log.Debug("mcp: URL elicitation failed", zap.Error(err))
		} else if ctx.Err() == nil {
			log.Debug("mcp: form elicitation failed", zap.Error(err))
		}
	case mode == mcp.ElicitationModeURL:
		log.Debug("mcp: URL elicitation answered", zap.String("action", string(res.Action)))
	case res.Action != mcp.ElicitationResponseActionAccept:
		// The person dismissed the form; the link still works until the deadline.
		log.Debug("mcp: form elicitation not accepted", zap.String("action", string(res.Action)))
	default:
		if err := m.answerForm(ctx, rq, sess.ID, res.Content); err != nil {
			log.Info("mcp: form elicitation answer not stored", zap.Error(err))
			return
		}
		log.Debug("mcp: answer submitted from a form elicitation")
	}
}

// complete tells the client a URL elicitation is done, so it can close
// whatever it opened. It reports whether a notification was queued that
// the result must give time to leave first (see settle); a held call
// writes it to its stream at once, in order.
func (e *elicitation) complete(ctx context.Context) bool {
	if e == nil || e.id == "" {
		return false
	}
	if e.held != nil {
		e.held.notify(ctx, string(mcp.MethodNotificationElicitationComplete), map[string]any{"elicitationId": e.id})
		return false
	}
	return e.m.server.SendElicitationComplete(ctx, e.cs, e.id) == nil
}

// stop ends the elicitation request, if still open, and waits for it: for
// a held call, a reply that comes later is no longer taken.
func (e *elicitation) stop() {
	if e == nil {
		return
	}
	e.cancel()
	if e.held != nil {
		e.held.sess.forgetElicitation(e.rpcID)
	}
	e.wg.Wait()
}

// answerForm submits a form elicitation's content through the core's
// exactly-once answer path, like an answer from the page. The stateful
// wait and the stateless (input-required) retry share it.
func (m *MCP) answerForm(ctx context.Context, rq *mcpRequest, id string, content any) error {
	cur, err := rq.svc.core.Get(ctx, OwnerOf(rq.claims), id)
	if err != nil {
		return fmt.Errorf("read question %s: %w", id, err)
	}
	var sub *validate.SubmitRequest
	if isForm(cur) {
		sub, err = questionsAnswer(content, hasComment(cur))
	} else {
		sub, err = formAnswer(content)
	}
	if err != nil {
		return fmt.Errorf("form answer unusable: %w", err)
	}
	if _, err := rq.svc.core.Answer(ctx, cur, sub, feedback.Via{How: feedback.ViaElicitation}); err != nil {
		return fmt.Errorf("answer question %s: %w", id, err)
	}
	return nil
}

// formSchema is the requestedSchema a question is asked in: one field per
// question of a form, else the options (and a comment).
func formSchema(sess *store.Session) map[string]any {
	if isForm(sess) {
		return questionsSchema(sess)
	}
	return optionsSchema(sess)
}

// elicitMode is how a waiting call reaches the person through the agent's
// own client, stateful or stateless alike: in the client's form
// (ElicitationForm: `elicitation form` configured, a form-capable client, a
// question with options or several questions), by opening the link
// (ElicitationURL), or not at all (""). An empty elicitation capability is
// the 2025-06-18 form, which meant form mode.
func elicitMode(configured string, caps *mcp.ElicitationCapability, sess *store.Session, link string) string {
	formOK := caps.Form != nil || caps.URL == nil
	switch {
	case configured == ElicitationForm && formOK && (len(sess.PredefinedOptions) > 0 || isForm(sess)):
		return ElicitationForm
	case caps.URL != nil && link != "":
		return ElicitationURL
	}
	return ""
}

// isForm reports whether sess is a form of several questions.
func isForm(sess *store.Session) bool { return sess.Form != nil && sess.Form.Questions != nil }

// optionsSchema is the requestedSchema of an option question: one answer
// (an enum, or an array of enums for multiSelect) and an optional comment.
// Option descriptions and the recommendation go into the answer's
// description, which clients show beside the field.
func optionsSchema(sess *store.Session) map[string]any {
	desc := "Pick one"
	if sess.MultiSelect {
		desc = "Pick one or more"
	}
	var def any
	if f := sess.Form; f != nil {
		desc += optionNotes(f.Options)
		for _, o := range f.Options {
			if o.Recommended && f.PreselectRecommended {
				def = o.Label
			}
		}
	}
	answer := map[string]any{"title": "Answer", "description": desc}
	if sess.MultiSelect {
		answer["type"], answer["items"], answer["uniqueItems"] = "array", map[string]any{"type": "string", "enum": sess.PredefinedOptions}, true
		if def != nil {
			answer["default"] = []any{def}
		}
	} else {
		answer["type"], answer["enum"] = "string", sess.PredefinedOptions
		if def != nil {
			answer["default"] = def
		}
	}
	props := map[string]any{"answer": answer}
	required := []string{"answer"}
	if sess.AllowFreeText {
		props["comment"] = map[string]any{"type": "string", "title": "Comment", "description": "Anything to add (optional)", "maxLength": validate.MaxFreeTextChars}
		if sess.MultiSelect {
			required = nil // free text alone is an answer too
		}
	}
	schema := map[string]any{"type": "object", "properties": props}
	if required != nil {
		schema["required"] = required
	}
	return schema
}

// questionsSchema maps a form onto the flat, primitive requestedSchema
// MCP form elicitation allows: one property per question (single: string
// enum; multi: array of string enums; text: string; boolean; number), with
// its defaults, bounds and required list. The answers come back typed and
// go through the same checks as the page's (validate.CheckForm).
func questionsSchema(sess *store.Session) map[string]any {
	props := map[string]any{}
	var required []string
	for _, q := range sess.Form.Questions {
		// Clients label a field with its title: the question itself (the id
		// means nothing to the person); a long one is whole in description.
		p := map[string]any{"title": clip(q.Message, 100)}
		if desc := optionNotes(q.Options); utf8.RuneCountInString(q.Message) > 100 || desc != "" {
			p["description"] = q.Message + desc
		}
		labels := make([]string, len(q.Options))
		for i, o := range q.Options {
			labels[i] = o.Label
		}
		switch q.Kind {
		case store.KindSingle:
			p["type"], p["enum"] = "string", labels
		case store.KindMulti:
			p["type"], p["items"], p["uniqueItems"] = "array", map[string]any{"type": "string", "enum": labels}, true
			setBound(p, "minItems", q.Min)
			setBound(p, "maxItems", q.Max)
		case store.KindText:
			p["type"] = "string"
			setBound(p, "minLength", q.Min)
			if q.Max != nil {
				setBound(p, "maxLength", q.Max)
			} else {
				p["maxLength"] = validate.MaxFreeTextChars
			}
		case store.KindBoolean:
			p["type"] = "boolean"
		case store.KindNumber:
			p["type"] = "number"
			setBound(p, "minimum", q.Min)
			setBound(p, "maximum", q.Max)
		}
		if len(q.Default) > 0 {
			p["default"] = q.Default
		}
		props[q.ID] = p
		if q.Required {
			required = append(required, q.ID)
		}
	}
	if hasComment(sess) {
		props["comment"] = map[string]any{"type": "string", "title": "Comment", "description": "Anything to add (optional)", "maxLength": validate.MaxFreeTextChars}
	}
	schema := map[string]any{"type": "object", "properties": props}
	if required != nil {
		schema["required"] = required
	}
	return schema
}

// hasComment: a form's elicitation has a free-text "comment" field when
// the form takes free text and no question already has that id.
func hasComment(sess *store.Session) bool {
	if !sess.AllowFreeText {
		return false
	}
	for _, q := range sess.Form.Questions {
		if q.ID == "comment" {
			return false
		}
	}
	return true
}

// optionNotes lists the options that have a description or are
// recommended, for a field's description ("" when none has).
func optionNotes(opts []store.Option) string {
	var b strings.Builder
	for _, o := range opts {
		if o.Description == "" && !o.Recommended {
			continue
		}
		b.WriteString("\n- " + o.Label)
		if o.Recommended {
			b.WriteString(" (recommended)")
		}
		if o.Description != "" {
			b.WriteString(": " + o.Description)
		}
	}
	return b.String()
}

func setBound(p map[string]any, name string, v *float64) {
	if v != nil {
		p[name] = *v
	}
}

// questionsAnswer turns the elicitation's {id: value, …, "comment"?} into
// a form submit.
func questionsAnswer(content any, comment bool) (*validate.SubmitRequest, error) {
	b, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("form content is not an object: %w", err)
	}
	sub := &validate.SubmitRequest{Answers: all}
	if c, ok := all["comment"]; ok && comment {
		if err := json.Unmarshal(c, &sub.FreeText); err != nil {
			return nil, errors.New("comment is not a string")
		}
		delete(all, "comment")
	}
	return sub, nil
}

// formAnswer turns {"answer": "a" | ["a","b"], "comment": "..."} into a submit.
func formAnswer(content any) (*validate.SubmitRequest, error) {
	b, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	var c struct {
		Answer  json.RawMessage `json:"answer"`
		Comment string          `json:"comment"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("form content is not an object: %w", err)
	}
	sub := &validate.SubmitRequest{FreeText: c.Comment}
	if len(c.Answer) > 0 && string(c.Answer) != "null" {
		var one string
		if err := json.Unmarshal(c.Answer, &one); err == nil {
			sub.SelectedOptions = []string{one}
		} else if err := json.Unmarshal(c.Answer, &sub.SelectedOptions); err != nil {
			return nil, errors.New("answer is neither a string nor a list of strings")
		}
	}
	return sub, nil
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
