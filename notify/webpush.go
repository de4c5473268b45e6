package notify

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/loopback"

	webpush "github.com/SherClockHolmes/webpush-go"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// PushSubscription is one device's Web Push subscription, as the browser's
// PushSubscription.toJSON() gives it.
type PushSubscription struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256dh string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// MaxEndpointLength bounds a subscription's endpoint URL (real ones are
// under 500 bytes).
const MaxEndpointLength = 2048

// CheckSubscription says what is wrong with a subscription a browser sent,
// or nil. allowLoopbackHTTP admits http:// endpoints on loopback, for tests.
func CheckSubscription(s PushSubscription, allowLoopbackHTTP bool) error {
	if s.Endpoint == "" || len(s.Endpoint) > MaxEndpointLength {
		return fmt.Errorf("endpoint must be 1–%d bytes", MaxEndpointLength)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return errors.New("endpoint must be an absolute URL without credentials or fragment")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowLoopbackHTTP && loopback.Host(u.Hostname()):
	default:
		return errors.New("endpoint must be an https URL")
	}
	p, err := decodeKey(s.Keys.P256dh)
	if err != nil || len(p) != 65 {
		return errors.New("keys.p256dh must be an uncompressed P-256 public key (65 bytes, base64url)")
	}
	if _, err := ecdh.P256().NewPublicKey(p); err != nil {
		return errors.New("keys.p256dh is not a point on P-256")
	}
	if a, err := decodeKey(s.Keys.Auth); err != nil || len(a) != 16 {
		return errors.New("keys.auth must be 16 bytes, base64url")
	}
	return nil
}

func decodeKey(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// SubscriptionID names a subscription by its endpoint, which is unique per
// device and browser profile: the same device subscribing again replaces
// its record.
func SubscriptionID(endpoint string) string {
	h := sha256.Sum256([]byte(endpoint))
	return hex.EncodeToString(h[:16])
}

// Subscriptions keeps each person's push subscriptions in the store, so
// every instance pushes to every device: a set of subscription ids per
// person and a record per subscription. Person ids are hashed into keys,
// since they may hold any character.
type Subscriptions struct {
	KV store.KV
	// TTL is how long a subscription is kept without being renewed (the
	// inbox renews it on every visit). Default 30 days.
	TTL time.Duration
}

func personKey(person string) string {
	h := sha256.Sum256([]byte(person))
	return hex.EncodeToString(h[:16])
}

func (s Subscriptions) ttl() time.Duration {
	if s.TTL <= 0 {
		return 30 * 24 * time.Hour
	}
	return s.TTL
}

func (s Subscriptions) setKey(person string) string { return "push:subs:" + personKey(person) }
func (s Subscriptions) recKey(person, id string) string {
	return "push:sub:" + personKey(person) + ":" + id
}

// MaxSubscriptionsPerPerson bounds the devices one person may register.
const MaxSubscriptionsPerPerson = 100

// ErrTooManySubscriptions is Add's error past MaxSubscriptionsPerPerson.
var ErrTooManySubscriptions = fmt.Errorf("notify: at most %d push subscriptions per person", MaxSubscriptionsPerPerson)

// Add stores (or renews) sub for person and returns its id. The caller has
// checked it with CheckSubscription.
func (s Subscriptions) Add(ctx context.Context, person string, sub PushSubscription) (string, error) {
	id := SubscriptionID(sub.Endpoint)
	ids, err := s.KV.Members(ctx, s.setKey(person))
	if err != nil {
		return "", fmt.Errorf("push subscriptions: %w", err)
	}
	known := false
	for _, m := range ids {
		known = known || m == id
	}
	if !known && len(ids) >= MaxSubscriptionsPerPerson {
		return "", ErrTooManySubscriptions
	}
	rec, err := json.Marshal(sub)
	if err != nil {
		return "", fmt.Errorf("push subscription: %w", err)
	}
	if err := s.KV.Put(ctx, s.recKey(person, id), rec, s.ttl()); err != nil {
		return "", fmt.Errorf("storing push subscription: %w", err)
	}
	if err := s.KV.AddMember(ctx, s.setKey(person), id, time.Now().Add(s.ttl())); err != nil {
		return "", fmt.Errorf("storing push subscription: %w", err)
	}
	return id, nil
}

// Remove deletes person's subscription id; removing nothing is not an error.
func (s Subscriptions) Remove(ctx context.Context, person, id string) error {
	if err := s.KV.RemoveMember(ctx, s.setKey(person), id); err != nil {
		return fmt.Errorf("removing push subscription: %w", err)
	}
	if err := s.KV.Delete(ctx, s.recKey(person, id)); err != nil {
		return fmt.Errorf("removing push subscription: %w", err)
	}
	return nil
}

// List returns person's subscriptions by id.
func (s Subscriptions) List(ctx context.Context, person string) (map[string]PushSubscription, error) {
	ids, err := s.KV.Members(ctx, s.setKey(person))
	if err != nil {
		return nil, fmt.Errorf("reading push subscriptions: %w", err)
	}
	out := make(map[string]PushSubscription, len(ids))
	for _, id := range ids {
		raw, err := s.KV.Load(ctx, s.recKey(person, id))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading push subscription: %w", err)
		}
		var sub PushSubscription
		if json.Unmarshal(raw, &sub) == nil {
			out[id] = sub
		}
	}
	return out, nil
}

// VAPIDKeys are the server's application-server key pair (RFC 8292), as
// webpush.GenerateVAPIDKeys gives them: base64url, private key a P-256
// scalar, public key the uncompressed point.
type VAPIDKeys struct {
	Private string `json:"private"`
	Public  string `json:"public"`
}

const vapidKey = "push:vapid"

// vapidKeep is how long generated keys are kept. Subscriptions are bound
// to the public key, so it must outlive every subscription; it is renewed
// on every start.
const vapidKeep = 10 * 365 * 24 * time.Hour

// LoadOrCreateVAPID returns the key pair kept in the store, generating it
// the first time. PutNew makes instances that start together agree on one
// pair: whoever stores first wins and every other one loads that.
func LoadOrCreateVAPID(ctx context.Context, kv store.KV) (VAPIDKeys, error) {
	raw, err := kv.Load(ctx, vapidKey)
	if errors.Is(err, store.ErrNotFound) {
		// The first start: make keys, unless another instance just did
		// (PutNew keeps the first), and read back whichever won.
		priv, pub, gerr := webpush.GenerateVAPIDKeys()
		if gerr != nil {
			return VAPIDKeys{}, fmt.Errorf("generating VAPID keys: %w", gerr)
		}
		fresh, _ := json.Marshal(VAPIDKeys{Private: priv, Public: pub})
		if _, err := kv.PutNew(ctx, vapidKey, fresh, vapidKeep); err != nil {
			return VAPIDKeys{}, fmt.Errorf("storing VAPID keys: %w", err)
		}
		raw, err = kv.Load(ctx, vapidKey)
	}
	if err != nil {
		return VAPIDKeys{}, fmt.Errorf("loading VAPID keys: %w", err)
	}
	var k VAPIDKeys
	if err := json.Unmarshal(raw, &k); err != nil || CheckVAPID(k) != nil {
		return VAPIDKeys{}, errors.New("the VAPID keys kept in the store are damaged; delete the key push:vapid to make new ones (every device must then subscribe again)")
	}
	// Renew, so that a key in use never expires.
	if err := kv.Put(ctx, vapidKey, raw, vapidKeep); err != nil {
		return VAPIDKeys{}, fmt.Errorf("renewing VAPID keys: %w", err)
	}
	return k, nil
}

// CheckVAPID says whether k is a usable P-256 key pair whose halves match.
func CheckVAPID(k VAPIDKeys) error {
	d, err := decodeKey(k.Private)
	if err != nil || len(d) != 32 {
		return errors.New("vapid_private_key must be a 32-byte P-256 private key, base64url")
	}
	priv, err := ecdh.P256().NewPrivateKey(d)
	if err != nil {
		return errors.New("vapid_private_key is not a valid P-256 private key")
	}
	p, err := decodeKey(k.Public)
	if err != nil {
		return errors.New("vapid_public_key must be base64url")
	}
	if string(priv.PublicKey().Bytes()) != string(p) {
		return errors.New("vapid_public_key is not the public half of vapid_private_key")
	}
	return nil
}

// PushJob is one notification to every device of a person.
type PushJob struct {
	Person string
	// Event names the job in logs and metrics (session.created, close).
	Event     string
	SessionID string
	// Payload builds the message when a worker takes the job (it may
	// issue an answer token, a store write, which the event path that
	// queued the job must not wait for). ok false sends nothing.
	Payload func(ctx context.Context) (payload []byte, ok bool, err error)
	// Deadline is when the message stops being worth delivering (the
	// question's deadline): the TTL the push service keeps it for.
	Deadline time.Time
	Urgency  webpush.Urgency
	// Topic lets a later message replace an undelivered earlier one at
	// the push service (the close of a question replaces its ask).
	Topic string
}

// PushOptions configure a Pusher.
type PushOptions struct {
	Keys VAPIDKeys
	// Subject is the contact in the VAPID token: an e-mail address
	// (without mailto:) or an https URL.
	Subject string
	Subs    Subscriptions
	// Delivery: 5 attempts, at most 1m between them. A nil Client is one
	// that refuses to connect to loopback, private and link-local
	// addresses (a browser picks the endpoint, so it is untrusted).
	Delivery
	Workers int // default 2
	// MaxInFlight bounds deliveries (one per device) in progress, retry
	// waits included; default 64.
	MaxInFlight int
}

// Pusher sends Web Push messages in the background: a bounded queue of
// jobs, each fanned out to a person's devices, each delivery retried on
// 429/5xx and dropped with its subscription on 404/410.
type Pusher struct {
	opt    PushOptions
	queue  chan PushJob
	slots  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewPusher starts a Pusher; Close stops it.
func NewPusher(opt PushOptions) *Pusher {
	opt.defaults(5, time.Minute, func() *http.Client { return PublicClient(false) })
	if opt.Workers <= 0 {
		opt.Workers = 2
	}
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = 64
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pusher{opt: opt, queue: make(chan PushJob, opt.QueueSize), slots: make(chan struct{}, opt.MaxInFlight), ctx: ctx, cancel: cancel}
	for range opt.Workers {
		p.wg.Go(p.work)
	}
	return p
}

// PublicClient is an HTTP client that connects only to public addresses:
// the check runs on the address actually dialled, after DNS, so a name
// that resolves to 127.0.0.1 or 10.x is refused too. allowLoopback admits
// loopback as well (a local push service in tests), never private or
// link-local ranges.
func PublicClient(allowLoopback bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("push: cannot parse dialled address: %w", err)
		}
		a := ap.Addr().Unmap()
		if allowLoopback && a.IsLoopback() {
			return nil
		}
		if !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
			return fmt.Errorf("push: refusing to connect to non-public address %s", a)
		}
		return nil
	}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a proxy would dial for us, past the check
	tr.DialContext = d.DialContext
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// PublicKey is the application-server key browsers subscribe with.
func (p *Pusher) PublicKey() string {
	if p == nil {
		return ""
	}
	return p.opt.Keys.Public
}

// Subscriptions is where the Pusher finds each person's devices.
func (p *Pusher) Subscriptions() Subscriptions { return p.opt.Subs }

// Send queues job. It never blocks: when the queue is full the oldest
// waiting job is dropped (logged, and reported to Observe).
func (p *Pusher) Send(job PushJob) {
	if p == nil {
		return
	}
	enqueueDropOldest(p.queue, job, p.dropped)
}

func (p *Pusher) dropped(j PushJob) {
	p.opt.Logger.Warn("push queue full; oldest message dropped", zap.String("event", j.Event), zap.String("session", j.SessionID))
	p.opt.Observe("push", j.Event, OutcomeDropped)
}

// Close stops sending; messages not yet delivered are dropped.
func (p *Pusher) Close() {
	if p == nil {
		return
	}
	p.cancel()
	p.wg.Wait()
}

func (p *Pusher) work() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case j := <-p.queue:
			p.fanOut(j)
		}
	}
}

// fanOut builds j's message and starts one delivery per device. It waits
// only for a free delivery slot, so one slow device holds one slot.
func (p *Pusher) fanOut(j PushJob) {
	log := p.opt.Logger.With(zap.String("event", j.Event), zap.String("session", j.SessionID))
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	subs, err := p.opt.Subs.List(ctx, j.Person)
	if err != nil {
		cancel()
		log.Warn("push: cannot read subscriptions", zap.Error(err))
		p.opt.Observe("push", j.Event, OutcomeFailed)
		return
	}
	if len(subs) == 0 {
		cancel()
		return
	}
	payload, ok, err := j.Payload(ctx)
	cancel()
	if err != nil {
		log.Warn("push: cannot build message", zap.Error(err))
		p.opt.Observe("push", j.Event, OutcomeFailed)
		return
	}
	if !ok {
		return
	}
	for id, sub := range subs {
		select {
		case p.slots <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		p.wg.Go(func() {
			defer func() { <-p.slots }()
			p.deliver(log, j, id, sub, payload)
		})
	}
}

// deliver sends one message to one device until the push service takes it
// (201), refuses it for good, or attempts or the message's life run out.
func (p *Pusher) deliver(log *zap.Logger, j PushJob, id string, sub PushSubscription, payload []byte) {
	label := Redact(sub.Endpoint)
	log = log.With(zap.String("receiver", label), zap.String("subscription", id))
	ws := &webpush.Subscription{Endpoint: sub.Endpoint, Keys: webpush.Keys{P256dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}
	var outlived bool
	res := retryDelivery(p.ctx, p.opt.MaxAttempts, p.opt.MaxWait, p.opt.Sleep, func() (int, time.Duration, error) {
		ttl := int(time.Until(j.Deadline).Seconds())
		if ttl <= 0 {
			outlived = true
			return 0, 0, errOutlived
		}
		ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
		defer cancel()
		// A copy each time: webpush-go appends its padding to the slice it
		// is given, in place when there is room, which would race between
		// devices sharing one payload.
		resp, err := webpush.SendNotificationWithContext(ctx, slices.Clone(payload), ws, &webpush.Options{
			HTTPClient: p.opt.Client, Subscriber: p.opt.Keys.subject(p.opt.Subject),
			VAPIDPublicKey: p.opt.Keys.Public, VAPIDPrivateKey: p.opt.Keys.Private,
			TTL: ttl, Urgency: j.Urgency, Topic: j.Topic,
		})
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), nil
	}, func(status int, err error) bool {
		// 404/410: gone for good (below); a message past its question's
		// deadline is pointless.
		return !errors.Is(err, errOutlived) && (err != nil || status == http.StatusTooManyRequests || status/100 == 5)
	})
	switch {
	case res.stopped:
	case res.delivered:
		p.opt.Observe(label, j.Event, OutcomeDelivered)
	case outlived:
		log.Debug("push: message outlived its question; not sent")
		p.opt.Observe(label, j.Event, OutcomeFailed)
	case res.status == http.StatusNotFound || res.status == http.StatusGone:
		// The browser unsubscribed or the subscription expired (RFC
		// 8030 §7.3): it will never work again.
		log.Info("push subscription is gone; dropped", zap.Int("status", res.status))
		rctx, rcancel := context.WithTimeout(p.ctx, 10*time.Second)
		if err := p.opt.Subs.Remove(rctx, j.Person, id); err != nil {
			log.Warn("push: cannot drop subscription", zap.Error(err))
		}
		rcancel()
		p.opt.Observe(label, j.Event, OutcomeFailed)
	default:
		fields := []zap.Field{zap.Int("attempt", res.attempt), zap.Int("status", res.status)}
		if res.err != nil {
			fields = append(fields, zap.String("error", safeError(res.err, sub.Endpoint, label)))
		}
		log.Warn("push delivery failed", fields...)
		p.opt.Observe(label, j.Event, OutcomeFailed)
	}
}

// errOutlived: the question ended before the message could be sent.
var errOutlived = errors.New("push: the question ended before the message was sent")

// subject is the VAPID `sub` as webpush-go wants it: it prefixes mailto:
// itself to anything that is not an https URL.
func (VAPIDKeys) subject(s string) string { return strings.TrimPrefix(s, "mailto:") }
