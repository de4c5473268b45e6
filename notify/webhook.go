// Package notify tells people that a question is waiting for them: it
// POSTs each session event to webhooks (a chat hook, ntfy, a pager, an
// app's backend), signed, retried, and never in the way of the request that
// caused it.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Event names.
const (
	EventCreated   = "session.created"
	EventAnswered  = "session.answered"
	EventExpired   = "session.expired"
	EventCancelled = "session.cancelled"
)

// Formats of the request body.
const (
	FormatJSON  = "json"  // the Event as JSON
	FormatSlack = "slack" // {"text": …}: Slack, Mattermost, Rocket.Chat, Discord's /slack endpoint
	FormatNtfy  = "ntfy"  // plain-text message with Title/Click/Tags headers, as ntfy takes it
)

// Outcomes reported to Options.Observe.
const (
	OutcomeDelivered = "delivered" // the receiver answered 2xx
	OutcomeFailed    = "failed"    // refused (4xx, 3xx), or attempts ran out
	OutcomeDropped   = "dropped"   // the receiver's queue was full
)

// Event is what a webhook receives (FormatJSON).
type Event struct {
	ID          string       `json:"id"` // delivery id, the same on every retry
	Event       string       `json:"event"`
	Timestamp   time.Time    `json:"timestamp"`
	SessionID   string       `json:"sessionId"`
	Message     string       `json:"message"`
	Options     []string     `json:"predefinedOptions"`
	Status      store.Status `json:"status"`
	ExpiresAt   time.Time    `json:"expiresAt"`
	Owner       store.Owner  `json:"owner"`
	FeedbackURL string       `json:"feedbackUrl,omitempty"` // only on session.created
	Answer      *Answer      `json:"answer,omitempty"`      // only on session.answered
}

// Answer says when, how and by whom a question was answered
// (session.answered). What was answered is included only for a webhook with
// IncludeAnswer.
type Answer struct {
	SubmittedAt time.Time `json:"submittedAt"`
	// Via is how the answer arrived: link (the answer page), owner (the
	// owner's token) or elicitation (the agent's own MCP client).
	Via string `json:"via,omitempty"`
	// AnsweredBy is who answered, when known; a holder of the link is anonymous.
	AnsweredBy string `json:"answeredBy,omitempty"`
	// *AnswerText's fields appear beside the ones above when it is set.
	*AnswerText
}

// AnswerText is the answer itself, sent only to webhooks with IncludeAnswer.
type AnswerText struct {
	SelectedOptions []string `json:"selectedOptions"` // never null
	FreeText        string   `json:"freeText"`
}

// Webhook configures one receiver.
type Webhook struct {
	URL     string
	Headers map[string]string
	// Secret signs each body: X-Feedback-Signature: sha256=<hex HMAC-SHA256(body)>.
	Secret string
	Format string
	// Events to send; empty means all.
	Events []string
	// IncludeAnswer adds the answer (selected options and free text) to
	// session.answered events. Off by default: the answer may be private,
	// and a chat channel is often seen by more people than the agent.
	IncludeAnswer bool
}

// Options tune delivery; the zero value is production's: 6 attempts, at
// most 5m between them.
type Options struct {
	Delivery
	// Workers per receiver; default 2. Each receiver has its own queue and
	// workers, so a slow or dead receiver delays only itself.
	Workers int
}

// Notifier delivers events to webhooks in the background.
type Notifier struct {
	receivers []*target
	opt       Options
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// target is one webhook with its own queue and workers.
type target struct {
	hook Webhook
	// label is scheme://host: enough to tell receivers apart in logs and
	// metrics without logging the path or query, which for Slack and ntfy
	// are the secret.
	label string
	queue chan Event
}

// New starts a Notifier; Close stops it.
func New(hooks []Webhook, opt Options) *Notifier {
	opt.defaults(6, 5*time.Minute, plainClient)
	if opt.Workers <= 0 {
		opt.Workers = 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{opt: opt, ctx: ctx, cancel: cancel}
	for _, h := range hooks {
		r := &target{hook: h, label: Redact(h.URL), queue: make(chan Event, opt.QueueSize)}
		n.receivers = append(n.receivers, r)
		for range opt.Workers {
			n.wg.Go(func() { n.work(r) })
		}
	}
	return n
}

// Redact returns the part of a webhook URL that is safe to log: scheme and
// host (with port). Slack and ntfy URLs carry their secret in the path.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid url)"
	}
	return u.Scheme + "://" + u.Host
}

// Close stops delivery; events not yet delivered are dropped.
func (n *Notifier) Close() {
	n.cancel()
	n.wg.Wait()
}

// Send queues the event for every webhook that wants it. It never blocks:
// when a receiver's queue is full, the oldest delivery waiting for that
// receiver is dropped (and logged, and reported to Options.Observe).
// For EventAnswered, s.Result says when, how and by whom.
func (n *Notifier) Send(event string, s *store.Session, feedbackURL string) {
	if n == nil {
		return
	}
	ev := Event{Event: event, Timestamp: time.Now().UTC(), SessionID: s.ID, Message: s.Message, Options: s.PredefinedOptions,
		Status: s.Status, ExpiresAt: s.ExpiresAt, Owner: s.Owner, FeedbackURL: feedbackURL}
	var text *AnswerText
	if event == EventAnswered && s.Result != nil {
		ev.Answer = &Answer{SubmittedAt: s.Result.SubmittedAt, Via: s.Result.Via, AnsweredBy: s.Result.AnsweredBy}
		text = &AnswerText{SelectedOptions: slices.Clone(s.Result.SelectedOptions), FreeText: s.Result.FreeText}
		if text.SelectedOptions == nil {
			text.SelectedOptions = []string{}
		}
	}
	for _, r := range n.receivers {
		if len(r.hook.Events) > 0 && !slices.Contains(r.hook.Events, event) {
			continue
		}
		e := ev
		e.ID = uuid.NewString()
		if ev.Answer != nil && r.hook.IncludeAnswer {
			a := *ev.Answer
			a.AnswerText = text
			e.Answer = &a
		}
		n.enqueue(r, e)
	}
}

// enqueue adds e to r's queue, making room by dropping the oldest waiting
// delivery when it is full. It never blocks.
func (n *Notifier) enqueue(r *target, e Event) {
	enqueueDropOldest(r.queue, e, func(old Event) { n.dropped(r, old) })
}

func (n *Notifier) dropped(r *target, e Event) {
	n.opt.Logger.Warn("webhook queue full; oldest event dropped",
		zap.String("receiver", r.label), zap.String("event", e.Event), zap.String("session", e.SessionID), zap.String("delivery", e.ID))
	n.opt.Observe(r.label, e.Event, OutcomeDropped)
}

func (n *Notifier) work(r *target) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case e := <-r.queue:
			n.deliver(r, e)
		}
	}
}

// deliver tries until the receiver takes it (2xx), refuses it for good
// (3xx: redirects are not followed; 4xx other than 408/429), or attempts run
// out.
func (n *Notifier) deliver(r *target, ev Event) {
	log := n.opt.Logger.With(zap.String("receiver", r.label), zap.String("delivery", ev.ID),
		zap.String("event", ev.Event), zap.String("session", ev.SessionID))
	body, ctype, headers, err := render(r.hook, ev)
	if err != nil {
		log.Error("webhook: cannot render event", zap.Error(err))
		n.opt.Observe(r.label, ev.Event, OutcomeFailed)
		return
	}
	res := retryDelivery(n.ctx, n.opt.MaxAttempts, n.opt.MaxWait, n.opt.Sleep,
		func() (int, time.Duration, error) { return n.post(r.hook, ev, body, ctype, headers) },
		// 3xx (redirects are not followed) and 4xx other than 408/429 are final.
		func(status int, err error) bool {
			return err != nil || !(status/100 == 3 || status/100 == 4) || transient(status, err)
		})
	switch {
	case res.stopped:
	case res.delivered:
		log.Debug("webhook delivered", zap.Int("attempt", res.attempt))
		n.opt.Observe(r.label, ev.Event, OutcomeDelivered)
	default:
		fields := []zap.Field{zap.Int("attempt", res.attempt), zap.Int("status", res.status)}
		if res.err != nil {
			fields = append(fields, zap.String("error", safeError(res.err, r.hook.URL, r.label)))
		}
		msg := "webhook delivery failed"
		if res.err == nil && res.status/100 == 3 {
			msg = "webhook delivery failed: the receiver redirected, and redirects are not followed"
		}
		log.Warn(msg, fields...)
		n.opt.Observe(r.label, ev.Event, OutcomeFailed)
	}
}

// safeError describes err without the receiver's URL: the client wraps its
// errors in *url.Error, whose text is the full URL.
func safeError(err error, rawURL, label string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if rawURL != "" {
		msg = strings.ReplaceAll(msg, rawURL, label)
	}
	return msg
}

func (n *Notifier) post(h Webhook, ev Event, body []byte, ctype string, headers map[string]string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("the webhook URL is not valid") // the parse error would quote it
	}
	req.Header.Set("User-Agent", "caddy-mcp-feedback")
	req.Header.Set("X-Feedback-Event", ev.Event)
	req.Header.Set("X-Feedback-Delivery", ev.ID)
	if h.Secret != "" {
		mac := hmac.New(sha256.New, []byte(h.Secret))
		mac.Write(body)
		req.Header.Set("X-Feedback-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	// The body's type is the format's, whatever the configured headers say;
	// for ntfy that also keeps agent text from being rendered as Markdown
	// (ntfy renders Markdown only with Content-Type text/markdown or a
	// Markdown/X-Markdown/md header).
	req.Header.Set("Content-Type", ctype)
	if h.Format == FormatNtfy {
		for _, k := range []string{"X-Markdown", "Markdown", "Md"} {
			req.Header.Del(k)
		}
	}
	resp, err := n.opt.Client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), nil
}

// render builds the body for the webhook's format.
func render(h Webhook, ev Event) ([]byte, string, map[string]string, error) {
	switch h.Format {
	case FormatSlack:
		b, err := json.Marshal(map[string]string{"text": slackSummary(ev)})
		return b, "application/json", nil, err
	case FormatNtfy:
		hdr := map[string]string{"Title": title(ev), "Tags": "question"}
		if ev.FeedbackURL != "" {
			hdr["Click"] = ev.FeedbackURL
		}
		// Plain text: ntfy's default, kept by post (no Markdown header,
		// Content-Type text/plain), so nothing in it needs escaping.
		body := ev.Message
		if a := answerLine(ev); a != "" {
			body += "\n" + a
		}
		return []byte(body), "text/plain; charset=utf-8", hdr, nil
	default:
		b, err := json.Marshal(ev)
		return b, "application/json", nil, err
	}
}

func title(ev Event) string {
	switch ev.Event {
	case EventCreated:
		return "A question is waiting for you"
	case EventAnswered:
		return "A question was answered"
	case EventExpired:
		return "A question expired unanswered"
	default:
		return "A question was withdrawn"
	}
}

// slackSummary is the text of a Slack-format message. Every piece that an
// agent or a person wrote goes through slackText, so none of it can become a
// mention (<!channel>, <@U…>) or a link with a disguised label (<url|label>).
func slackSummary(ev Event) string {
	var b strings.Builder
	b.WriteString(title(ev))
	b.WriteString(": ")
	b.WriteString(slackText(ev.Message))
	if len(ev.Options) > 0 {
		opts := make([]string, len(ev.Options))
		for i, o := range ev.Options {
			opts[i] = slackText(o)
		}
		b.WriteString("\nOptions: " + strings.Join(opts, " · "))
	}
	if a := answerLine(ev); a != "" {
		b.WriteString("\n" + slackText(a))
	}
	if ev.FeedbackURL != "" {
		b.WriteString("\nAnswer: " + slackText(ev.FeedbackURL))
	}
	return b.String()
}

// answerLine is the answer of a session.answered event for the text formats,
// shortened; "" when the event carries none.
func answerLine(ev Event) string {
	if ev.Answer == nil || ev.Answer.AnswerText == nil {
		return ""
	}
	parts := slices.Clone(ev.Answer.SelectedOptions)
	if ev.Answer.FreeText != "" {
		parts = append(parts, ev.Answer.FreeText)
	}
	return "Answer: " + truncate(strings.Join(parts, " · "), 500)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// slackEscaper applies Slack's message-formatting escapes: &, < and > are
// its control characters, and only those three are to be encoded
// (https://api.slack.com/reference/surfaces/formatting#escaping).
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// slackText escapes s for a Slack-format message and breaks bare
// @-mentions (@channel, @here, @everyone, @all, @someone): Slack itself only
// pings through <!channel>/<@U…>, which the escaping disarms, but Mattermost,
// Rocket.Chat and Discord's /slack endpoint, which take the same format, ping
// on the bare word. A zero-width space after the @ keeps the text as it
// looks and stops the mention.
func slackText(s string) string {
	s = slackEscaper.Replace(s)
	if !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	prev := ' '
	for i, r := range s {
		b.WriteRune(r)
		if r == '@' && !isWordRune(prev) {
			if next, _ := utf8.DecodeRuneInString(s[i+1:]); isWordRune(next) {
				b.WriteString("\u200b")
			}
		}
		prev = r
	}
	return b.String()
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 8)
	return d + rand.N(d/2+1)
}

// parseRetryAfter reads seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
