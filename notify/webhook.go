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
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Event names.
const (
	EventCreated   = "session.created"
	EventExpired   = "session.expired"
	EventCancelled = "session.cancelled"
)

// Formats of the request body.
const (
	FormatJSON  = "json"  // the Event as JSON
	FormatSlack = "slack" // {"text": …}: Slack, Mattermost, Rocket.Chat, Discord's /slack endpoint
	FormatNtfy  = "ntfy"  // plain-text message with Title/Click/Tags headers, as ntfy takes it
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
}

// Options tune delivery; the zero value is production's.
type Options struct {
	Client      *http.Client
	MaxAttempts int                                  // default 6
	MaxWait     time.Duration                        // longest wait between attempts, Retry-After included; default 5m
	QueueSize   int                                  // deliveries waiting; default 1000, then the oldest is dropped
	Sleep       func(context.Context, time.Duration) // for tests; default waits on a timer
	Logger      *zap.Logger
}

// Notifier delivers events to webhooks in the background.
type Notifier struct {
	hooks  []Webhook
	opt    Options
	queue  chan delivery
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type delivery struct {
	hook Webhook
	ev   Event
}

const workers = 4

// New starts a Notifier; Close stops it.
func New(hooks []Webhook, opt Options) *Notifier {
	if opt.Client == nil {
		opt.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 6
	}
	if opt.MaxWait <= 0 {
		opt.MaxWait = 5 * time.Minute
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = 1000
	}
	if opt.Sleep == nil {
		opt.Sleep = sleep
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{hooks: hooks, opt: opt, queue: make(chan delivery, opt.QueueSize), ctx: ctx, cancel: cancel}
	for range workers {
		n.wg.Go(n.work)
	}
	return n
}

// Close stops delivery; events not yet delivered are dropped.
func (n *Notifier) Close() {
	n.cancel()
	n.wg.Wait()
}

// Send queues ev for every webhook that wants it. It never blocks: when the
// queue is full the event is dropped and logged.
func (n *Notifier) Send(event string, s *store.Session, feedbackURL string) {
	if n == nil {
		return
	}
	ev := Event{Event: event, Timestamp: time.Now().UTC(), SessionID: s.ID, Message: s.Message, Options: s.PredefinedOptions,
		Status: s.Status, ExpiresAt: s.ExpiresAt, Owner: s.Owner, FeedbackURL: feedbackURL}
	for _, h := range n.hooks {
		if len(h.Events) > 0 && !slices.Contains(h.Events, event) {
			continue
		}
		ev.ID = uuid.NewString()
		select {
		case n.queue <- delivery{hook: h, ev: ev}:
		default:
			n.opt.Logger.Warn("webhook queue full; event dropped", zap.String("event", event), zap.String("session", s.ID))
		}
	}
}

func (n *Notifier) work() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case d := <-n.queue:
			n.deliver(d)
		}
	}
}

// deliver tries until the receiver takes it (2xx), refuses it for good
// (4xx other than 408/429), or attempts run out.
func (n *Notifier) deliver(d delivery) {
	body, ctype, headers, err := render(d.hook, d.ev)
	if err != nil {
		n.opt.Logger.Error("webhook: cannot render event", zap.Error(err))
		return
	}
	log := n.opt.Logger.With(zap.String("delivery", d.ev.ID), zap.String("event", d.ev.Event), zap.String("session", d.ev.SessionID))
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := n.post(d.hook, d.ev, body, ctype, headers)
		if err == nil && status/100 == 2 {
			log.Debug("webhook delivered", zap.Int("attempt", attempt))
			return
		}
		permanent := err == nil && status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
		if permanent || attempt >= n.opt.MaxAttempts {
			log.Warn("webhook delivery failed", zap.Int("attempt", attempt), zap.Int("status", status), zap.Error(err))
			return
		}
		wait := backoff(attempt)
		if retryAfter > 0 {
			wait = retryAfter
		}
		n.opt.Sleep(n.ctx, min(wait, n.opt.MaxWait))
		if n.ctx.Err() != nil {
			return
		}
	}
}

func (n *Notifier) post(h Webhook, ev Event, body []byte, ctype string, headers map[string]string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", ctype)
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
	resp, err := n.opt.Client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), nil
}

// render builds the body for the webhook's format.
func render(h Webhook, ev Event) ([]byte, string, map[string]string, error) {
	switch h.Format {
	case FormatSlack:
		b, err := json.Marshal(map[string]string{"text": summary(ev)})
		return b, "application/json", nil, err
	case FormatNtfy:
		hdr := map[string]string{"Title": title(ev), "Tags": "question"}
		if ev.FeedbackURL != "" {
			hdr["Click"] = ev.FeedbackURL
		}
		return []byte(ev.Message), "text/plain; charset=utf-8", hdr, nil
	default:
		b, err := json.Marshal(ev)
		return b, "application/json", nil, err
	}
}

func title(ev Event) string {
	switch ev.Event {
	case EventCreated:
		return "A question is waiting for you"
	case EventExpired:
		return "A question expired unanswered"
	default:
		return "A question was withdrawn"
	}
}

func summary(ev Event) string {
	var b strings.Builder
	b.WriteString(title(ev))
	b.WriteString(": ")
	b.WriteString(ev.Message)
	if len(ev.Options) > 0 {
		b.WriteString("\nOptions: " + strings.Join(ev.Options, " · "))
	}
	if ev.FeedbackURL != "" {
		b.WriteString("\nAnswer: " + ev.FeedbackURL)
	}
	return b.String()
}

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
