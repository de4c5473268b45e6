package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// NtfyAction is one button of an ntfy message, in ntfy's JSON publishing
// form (docs.ntfy.sh/publish, "Action buttons"): `view` opens URL, `http`
// sends a request from the phone itself.
type NtfyAction struct {
	Action  string            `json:"action"`
	Label   string            `json:"label"`
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// Clear dismisses the notification once the action succeeded.
	Clear bool `json:"clear,omitempty"`
}

// NtfyMessage is a message in ntfy's JSON publishing form. Markdown is
// always false: agent text is shown as written, never rendered.
type NtfyMessage struct {
	Topic    string       `json:"topic"`
	Title    string       `json:"title,omitempty"`
	Message  string       `json:"message"`
	Tags     []string     `json:"tags,omitempty"`
	Priority int          `json:"priority,omitempty"`
	Click    string       `json:"click,omitempty"`
	Actions  []NtfyAction `json:"actions,omitempty"`
	Markdown bool         `json:"markdown"`
}

// MaxNtfyActions is ntfy's limit of buttons per message.
const MaxNtfyActions = 3

// NtfyTopic is one configured topic (`notify ntfy <topic-url>`).
type NtfyTopic struct {
	// URL is the topic's URL, https://ntfy.example/<topic>.
	URL string
	// Token, when set, is sent as `Authorization: Bearer <token>` (an ntfy
	// access token, tk_…).
	Token string
}

// SplitNtfyTopic splits a topic URL into the server's publishing URL
// (where JSON messages are posted) and the topic name.
func SplitNtfyTopic(raw string) (server, topic string, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", errors.New("the ntfy topic must be an http(s) URL like https://ntfy.sh/<topic>, without credentials, query or fragment (put the token in `token`)")
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	i := strings.LastIndexByte(path, '/')
	topic = path[i+1:]
	if topic == "" || strings.ContainsAny(topic, "%,") {
		return "", "", errors.New("the ntfy topic URL must end in a topic name: https://ntfy.sh/<topic>")
	}
	u.Path, u.RawPath = path[:i+1], ""
	return u.String(), topic, nil
}

// NtfyJob is one message to every configured topic. Build runs in a
// worker, once per topic (each gets its own answer token), so the event
// path that queued the job never waits for the store.
type NtfyJob struct {
	Event     string
	SessionID string
	Build     func(ctx context.Context) (NtfyMessage, bool, error)
}

// NtfyOptions tune delivery; zero values are production's.
type NtfyOptions struct {
	Delivery // 6 attempts, at most 5m between them; QueueSize is per topic
}

// Ntfy publishes messages to ntfy topics in the background, one queue and
// worker per topic, retried like webhooks.
type Ntfy struct {
	topics []*ntfyTarget
	opt    NtfyOptions
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type ntfyTarget struct {
	server, topic, token, label string
	queue                       chan NtfyJob
}

// NewNtfy starts a publisher; Close stops it. Topic URLs must have passed
// SplitNtfyTopic.
func NewNtfy(topics []NtfyTopic, opt NtfyOptions) (*Ntfy, error) {
	opt.defaults(6, 5*time.Minute, plainClient)
	ctx, cancel := context.WithCancel(context.Background())
	n := &Ntfy{opt: opt, ctx: ctx, cancel: cancel}
	for _, t := range topics {
		server, topic, err := SplitNtfyTopic(t.URL)
		if err != nil {
			cancel()
			return nil, err
		}
		tg := &ntfyTarget{server: server, topic: topic, token: t.Token, label: Redact(t.URL), queue: make(chan NtfyJob, opt.QueueSize)}
		n.topics = append(n.topics, tg)
	}
	for _, tg := range n.topics {
		n.wg.Go(func() { n.work(tg) })
	}
	return n, nil
}

// Close stops publishing; messages not yet sent are dropped.
func (n *Ntfy) Close() {
	if n == nil {
		return
	}
	n.cancel()
	n.wg.Wait()
}

// Send queues job for every topic. It never blocks.
func (n *Ntfy) Send(job NtfyJob) {
	if n == nil {
		return
	}
	for _, tg := range n.topics {
		n.enqueue(tg, job)
	}
}

func (n *Ntfy) enqueue(tg *ntfyTarget, j NtfyJob) {
	enqueueDropOldest(tg.queue, j, func(old NtfyJob) { n.dropped(tg, old) })
}

func (n *Ntfy) dropped(tg *ntfyTarget, j NtfyJob) {
	n.opt.Logger.Warn("ntfy queue full; oldest message dropped", zap.String("receiver", tg.label), zap.String("event", j.Event), zap.String("session", j.SessionID))
	n.opt.Observe(tg.label, j.Event, OutcomeDropped)
}

func (n *Ntfy) work(tg *ntfyTarget) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case j := <-tg.queue:
			n.deliver(tg, j)
		}
	}
}

func (n *Ntfy) deliver(tg *ntfyTarget, j NtfyJob) {
	log := n.opt.Logger.With(zap.String("receiver", tg.label), zap.String("event", j.Event), zap.String("session", j.SessionID))
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	msg, ok, err := j.Build(ctx)
	cancel()
	if err != nil {
		log.Warn("ntfy: cannot build message", zap.Error(err))
		n.opt.Observe(tg.label, j.Event, OutcomeFailed)
		return
	}
	if !ok {
		return
	}
	msg.Topic = tg.topic
	body, err := json.Marshal(msg)
	if err != nil {
		log.Error("ntfy: cannot encode message", zap.Error(err))
		n.opt.Observe(tg.label, j.Event, OutcomeFailed)
		return
	}
	res := retryDelivery(n.ctx, n.opt.MaxAttempts, n.opt.MaxWait, n.opt.Sleep,
		func() (int, time.Duration, error) { return n.post(tg, body) }, transient)
	switch {
	case res.stopped:
	case res.delivered:
		n.opt.Observe(tg.label, j.Event, OutcomeDelivered)
	default:
		fields := []zap.Field{zap.Int("attempt", res.attempt), zap.Int("status", res.status)}
		if res.err != nil {
			fields = append(fields, zap.String("error", safeError(res.err, tg.server, tg.label)))
		}
		log.Warn("ntfy delivery failed", fields...)
		n.opt.Observe(tg.label, j.Event, OutcomeFailed)
	}
}

func (n *Ntfy) post(tg *ntfyTarget, body []byte) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, tg.server, bytes.NewReader(body))
	if err != nil {
		return 0, 0, fmt.Errorf("ntfy request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-mcp-feedback")
	if tg.token != "" {
		req.Header.Set("Authorization", "Bearer "+tg.token)
	}
	resp, err := n.opt.Client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), nil
}
