package store

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/redis/rueidis"
)

const (
	// DefaultKeyPrefix is the KeyPrefix used when RedisOptions leaves it empty.
	DefaultKeyPrefix = "mcpfb:"

	// defaultOpTimeout caps a call whose ctx has no deadline. Without it a
	// retryable script would be retried for as long as Redis stays down.
	defaultOpTimeout = 2 * time.Second
	// defaultWriteTimeout is how long a connection may wait for Redis to
	// answer before rueidis drops it; it also bounds how long a half-open
	// subscriber connection goes unnoticed.
	defaultWriteTimeout = 5 * time.Second

	subscribeMinBackoff = 100 * time.Millisecond
	subscribeMaxBackoff = 5 * time.Second
)

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// URL is redis://[user:pass@]host:port/db or rediss://… for TLS, in the
	// syntax of rueidis.ParseURL (query options such as dial_timeout apply).
	URL string
	// KeyPrefix starts every key and the pub/sub channel; instances that
	// share sessions must use the same one. Empty means DefaultKeyPrefix.
	KeyPrefix string
	// Client, when set, is used instead of dialing URL, and Close leaves it
	// open. Its client-side cache is never used (no DoCache).
	Client rueidis.Client
	// RootCAs, when set, verify a rediss:// server instead of the system's
	// roots (a managed Redis with its own CA).
	RootCAs *x509.CertPool
	// WaitReplicas, when above zero, makes an answer count as stored only
	// once that many replicas have it (Redis WAIT, within WaitTimeout):
	// with asynchronous replication, a failover right after an answer
	// could otherwise lose an answer the person was told was saved.
	WaitReplicas int
	// WaitTimeout bounds that wait; zero means DefaultWaitTimeout.
	WaitTimeout time.Duration
}

// DefaultWaitTimeout bounds WAIT when RedisOptions.WaitTimeout is zero.
const DefaultWaitTimeout = time.Second

// Redis is a Store shared by every instance that points at the same Redis
// and prefix. Redis is the only clock: every deadline decision and every
// transition happens inside one Lua script, so instances with skewed clocks
// cannot disagree, and a submit is applied at most once.
//
// Layout: one hash per session at <prefix>s:{<id>} (the braces are a Redis
// Cluster hash tag, so a session stays in one slot), with a TTL of the ttl
// given to Create; transitions never touch the TTL. Each transition
// announces the id with SPUBLISH on the question's own sharded channel
// <prefix>ev:{<id>} (same hash tag, so same slot and, in a Cluster, same
// shard), which only the instances holding a watcher of that question have
// subscribed to: an announcement costs Redis one delivery per interested
// instance, not one per instance, and a Cluster spreads them over its
// shards instead of broadcasting each over the cluster bus.
type Redis struct {
	client rueidis.Client
	own    bool
	prefix string
	hub    *hub
	cache  *sessionCache
	reads  readCoalescer
	changeHook

	closed    atomic.Bool
	closeOnce sync.Once
	stopSub   context.CancelFunc
	// subscribed counts subscribe confirmations (of any question's
	// channel); tests wait on it to tell a first subscription from a
	// resubscribe.
	subscribed atomic.Int64
	// sub keeps the channels of watched questions subscribed on one
	// connection (a single Redis); nil on a Cluster, where follows holds,
	// per question with a local watcher, the stop of the goroutine that
	// keeps its channel subscribed (see follow).
	sub      *subscriber
	followMu sync.Mutex
	follows  map[string]func()
	subCtx   context.Context
	subWG    sync.WaitGroup
	// received counts change announcements from the events channel
	// (EventsReceived).
	received atomic.Int64
	// waitReplicas and waitTimeout: see RedisOptions.
	waitReplicas int
	waitTimeout  time.Duration
}

var _ Store = (*Redis)(nil)

// NewRedis connects to Redis and starts the subscriber that feeds Watch.
// It fails when Redis cannot be reached, so that a bad address shows up at
// configuration time; the error then wraps ErrUnavailable.
func NewRedis(opts RedisOptions) (*Redis, error) {
	r := &Redis{
		client: opts.Client,
		prefix: opts.KeyPrefix,
		hub:    newHub(),
		cache:  newSessionCache(),

		waitReplicas: opts.WaitReplicas,
		waitTimeout:  opts.WaitTimeout,
	}
	if r.waitTimeout <= 0 {
		r.waitTimeout = DefaultWaitTimeout
	}
	if r.prefix == "" {
		r.prefix = DefaultKeyPrefix
	}
	if r.client == nil {
		if opts.URL == "" {
			return nil, errors.New("store: redis: neither URL nor Client given")
		}
		co, err := rueidis.ParseURL(opts.URL)
		if err != nil {
			// The URL may hold a password, and url.Error quotes it in full.
			if ue := (*url.Error)(nil); errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("store: redis: invalid URL: %w", err)
		}
		// No RESP3 client tracking (DoCache): a read served from it could
		// not tell that Redis is away, and the events channel already
		// announces every change to what Peek keeps (see sessionCache).
		co.DisableCache = true
		if co.TLSConfig != nil && co.TLSConfig.InsecureSkipVerify {
			return nil, errors.New("store: redis: skip_verify turns off TLS verification; give the server's CA instead (tls_ca_file)")
		}
		if opts.RootCAs != nil {
			if co.TLSConfig == nil {
				return nil, errors.New("store: redis: a CA is given but the URL is not rediss://")
			}
			co.TLSConfig.RootCAs = opts.RootCAs
		}
		if co.ConnWriteTimeout == 0 {
			co.ConnWriteTimeout = defaultWriteTimeout
		}
		if co.ClientName == "" {
			co.ClientName = "caddy-mcp-feedback"
		}
		c, err := rueidis.NewClient(co)
		if err != nil {
			return nil, fmt.Errorf("%w: connecting to redis: %w", ErrUnavailable, err)
		}
		r.client = c
		r.own = true
	}

	r.follows = map[string]func(){}
	r.subCtx, r.stopSub = context.WithCancel(context.Background())
	r.hub.onFirst, r.hub.onLast = r.startFollowing, r.stopFollowing
	if r.client.Mode() != rueidis.ClientModeCluster {
		r.sub = newSubscriber(r)
		r.subWG.Add(1)
		go func() {
			defer r.subWG.Done()
			r.sub.run(r.subCtx)
		}()
	}
	return r, nil
}

func (r *Redis) key(id string) string { return r.prefix + "s:{" + id + "}" }

// channel is the sharded channel that announces changes of question id.
func (r *Redis) channel(id string) string { return r.prefix + "ev:{" + id + "}" }

// startFollowing subscribes to id's channel for as long as id has a local
// watcher; the hub calls it (under its lock) when the first one arrives.
func (r *Redis) startFollowing(id string) {
	if r.sub != nil {
		r.sub.set(r.channel(id), true)
		return
	}
	ctx, cancel := context.WithCancel(r.subCtx)
	r.followMu.Lock()
	r.follows[id] = cancel
	r.followMu.Unlock()
	r.subWG.Add(1)
	go func() {
		defer r.subWG.Done()
		r.follow(ctx, id)
	}()
}

// stopFollowing ends id's subscription; the hub calls it (under its lock)
// when the last watcher of id leaves.
func (r *Redis) stopFollowing(id string) {
	if r.sub != nil {
		r.sub.set(r.channel(id), false)
		return
	}
	r.followMu.Lock()
	cancel := r.follows[id]
	delete(r.follows, id)
	r.followMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// follow keeps id's channel subscribed until ctx ends, with a Receive of its
// own (Redis Cluster; a single Redis uses the subscriber). rueidis resubscribes
// by itself after a reconnect; the loop covers Receive giving up (a
// SUNSUBSCRIBE from the server on a slot migration, an ACL error).
//
// Pub/sub is a hint: an announcement made before the subscription is
// confirmed, or while it was down, is lost. So every confirmation signals
// id's watchers, who re-read the question, which covers whatever changed
// in the gap (and between Watch and the first confirmation).
func (r *Redis) follow(ctx context.Context, id string) {
	ch := r.channel(id)
	var confirmed atomic.Bool
	hookCtx := rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		// Runs on the connection's reader goroutine: hub calls never block.
		if s.Kind == "ssubscribe" && s.Channel == ch {
			confirmed.Store(true)
			r.subscribed.Add(1) // counted before the signal it explains
			r.cache.invalidate(id)
			r.hub.notify(id)
		}
	})
	backoff := subscribeMinBackoff
	for {
		confirmed.Store(false)
		_ = r.client.Receive(hookCtx, r.client.B().Ssubscribe().Channel(ch).Build(),
			func(rueidis.PubSubMessage) {
				// Forget the cached state before waking watchers, so that no
				// reader woken by this message can be served the old state.
				r.received.Add(1)
				r.cache.invalidate(id)
				r.hub.notify(id)
			})
		if ctx.Err() != nil {
			// Receive only stops listening; the server keeps the channel
			// subscribed on the connection until told otherwise. Sent after
			// our SSUBSCRIBE on the same connection, so it cannot overtake it.
			uctx, cancel := context.WithTimeout(context.Background(), defaultOpTimeout)
			_ = r.client.Do(uctx, r.client.B().Sunsubscribe().Channel(ch).Build()).Error()
			cancel()
			return
		}
		if confirmed.Load() {
			backoff = subscribeMinBackoff
		}
		backoff = pause(ctx, backoff)
	}
}

// pause waits d or until ctx ends, and returns the next backoff after d.
func pause(ctx context.Context, d time.Duration) time.Duration {
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
	case <-t.C:
	}
	return min(2*d, subscribeMaxBackoff)
}

// Result codes of the scripts: {code, changed, HGETALL...}.
const (
	codeNotFound = 0
	codeOK       = 1
	codeConflict = 2
	codeGone     = 3
)

// luaPrelude is shared by the transition scripts. KEYS[1] is the session
// hash, ARGV[1] the question's sharded channel and ARGV[2] the session id.
//
// now_ms reads Redis' clock; calling TIME before a write is allowed since
// Redis 5 replicates script effects, not the script.
//
// expire_due moves a pending session past its deadline to expired, dated at
// the deadline (when it ended, not when someone noticed), and publishes it.
const luaPrelude = `
local key = KEYS[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire_due(now)
  local dl = redis.call('HGET', key, 'deadline_ms')
  if now > tonumber(dl) then
    redis.call('HSET', key, 'status', 'expired', 'updated_ms', dl)
    redis.call('SPUBLISH', ARGV[1], ARGV[2])
    return true
  end
  return false
end
local st = redis.call('HGET', key, 'status')
if not st then return {0, 0} end
`

// createScript refuses an existing id instead of overwriting it, which a
// plain HSET would do (and a SET would also clear the TTL).
// ARGV: data JSON, deadline_ms, created_ms, updated_ms, ttl_ms.
var createScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'status', 'pending',
  'deadline_ms', ARGV[2], 'created_ms', ARGV[3], 'updated_ms', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// getScript is retryable: running it twice has the effect of running it once.
var getScript = rueidis.NewLuaScriptRetryable(luaPrelude + `
local changed = 0
if st == 'pending' and expire_due(now_ms()) then changed = 1 end
return {1, changed, redis.call('HGETALL', key)}
`)

// submitSrc: ARGV[3] is the answer JSON, ARGV[4] the nonce. A submitted
// session with the same non-empty nonce is the retry of our own success.
const submitSrc = luaPrelude + `
if st == 'pending' then
  local now = now_ms()
  if expire_due(now) then return {3, 1, redis.call('HGETALL', key)} end
  local ns = string.format('%d', now)
  redis.call('HSET', key, 'status', 'submitted', 'result', ARGV[3], 'nonce', ARGV[4],
    'submitted_ms', ns, 'updated_ms', ns)
  redis.call('SPUBLISH', ARGV[1], ARGV[2])
  return {1, 1, redis.call('HGETALL', key)}
end
if st == 'submitted' then
  if ARGV[4] ~= '' and redis.call('HGET', key, 'nonce') == ARGV[4] then
    return {1, 0, redis.call('HGETALL', key)}
  end
  return {2, 0}
end
return {3, 0}
`

var (
	// With a nonce, a resend after a lost reply returns the stored success,
	// so rueidis may retry it; without one the resend would report a conflict.
	submitScript      = rueidis.NewLuaScript(submitSrc)
	submitNonceScript = rueidis.NewLuaScriptRetryable(submitSrc)
)

// cancelScript is retryable: a repeated cancel succeeds like the first.
var cancelScript = rueidis.NewLuaScriptRetryable(luaPrelude + `
if st == 'pending' then
  local now = now_ms()
  if expire_due(now) then return {3, 1, redis.call('HGETALL', key)} end
  redis.call('HSET', key, 'status', 'cancelled', 'updated_ms', string.format('%d', now))
  redis.call('SPUBLISH', ARGV[1], ARGV[2])
  return {1, 1, redis.call('HGETALL', key)}
end
if st == 'cancelled' then return {1, 0, redis.call('HGETALL', key)} end
if st == 'submitted' then return {2, 0} end
return {3, 0}
`)

// redisData is the part of a session that never changes after Create.
type redisData struct {
	Owner             Owner           `json:"owner"`
	Message           string          `json:"message"`
	PredefinedOptions []string        `json:"predefinedOptions"`
	MultiSelect       bool            `json:"multiSelect"`
	AllowFreeText     bool            `json:"allowFreeText"`
	Metadata          json.RawMessage `json:"metadata,omitempty"`
	TokenHash         []byte          `json:"tokenHash"`
	// Form is absent in questions stored before forms existed.
	Form *Form `json:"form,omitempty"`
	// To is absent unless the question is addressed to other people.
	To []string `json:"to,omitempty"`
}

// redisAnswer is the stored answer; its time is the submitted_ms field,
// which only the script knows.
type redisAnswer struct {
	SelectedOptions []string        `json:"selectedOptions"`
	FreeText        string          `json:"freeText"`
	Via             string          `json:"via,omitempty"`
	By              string          `json:"by,omitempty"`
	Answers         json.RawMessage `json:"answers,omitempty"`
	Attachments     []AttachmentRef `json:"attachments,omitempty"`
}

// Create implements Store. Times are kept to the millisecond.
func (r *Redis) Create(ctx context.Context, s *Session, ttl time.Duration) error {
	if err := checkCreate(s, ttl); err != nil {
		return err
	}
	data, err := json.Marshal(redisData{
		Owner:             s.Owner,
		Message:           s.Message,
		PredefinedOptions: s.PredefinedOptions,
		MultiSelect:       s.MultiSelect,
		AllowFreeText:     s.AllowFreeText,
		Metadata:          s.Metadata,
		TokenHash:         s.TokenHash,
		Form:              s.Form,
		To:                s.To,
	})
	if err != nil {
		return fmt.Errorf("store: create %s: encoding: %w", s.ID, err)
	}
	updated := s.UpdatedAt
	if updated.IsZero() {
		updated = s.CreatedAt
	}
	if r.closed.Load() {
		return ErrUnavailable
	}
	gen := r.cache.gen(s.ID)
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	ok, err := createScript.Exec(ctx, r.client, []string{r.key(s.ID)}, []string{
		string(data),
		ms(s.ExpiresAt),
		ms(s.CreatedAt),
		ms(updated),
		strconv.FormatInt(ttl.Milliseconds(), 10),
	}).AsInt64()
	if err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrUnavailable, s.ID, err)
	}
	if ok == 0 {
		return fmt.Errorf("create %s: %w", s.ID, ErrExists)
	}
	// This instance now knows the question exactly as any reader would
	// decode it, so that reading or answering it here needs no extra
	// round trip.
	if d := createdData(s, data); d != nil {
		r.cache.put(s.ID, gen, d, &qstate{status: StatusPending, updated: time.UnixMilli(updated.UnixMilli()).UTC()}, time.Now())
	}
	return nil
}

// createdData is the immutable part of a just-created question as a
// reader would decode it from data (its stored JSON): built directly when
// the JSON round trip cannot change anything (valid UTF-8, metadata that is
// already compact and has nothing encoding/json escapes), else decoded.
func createdData(s *Session, data []byte) *qdata {
	// A form is decoded from its JSON: checking that its round trip is
	// exact would cost more than the decode.
	exact := s.Form == nil && utf8.ValidString(s.Message) && utf8.ValidString(s.Owner.Issuer) && utf8.ValidString(s.Owner.Subject)
	for _, o := range s.PredefinedOptions {
		exact = exact && utf8.ValidString(o)
	}
	for _, c := range s.Metadata {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xe2:
			exact = false
		}
	}
	created, deadline := time.UnixMilli(s.CreatedAt.UnixMilli()).UTC(), time.UnixMilli(s.ExpiresAt.UnixMilli()).UTC()
	if !exact {
		d, err := decodeData(data, created, deadline)
		if err != nil {
			return nil
		}
		return d
	}
	d := &qdata{
		owner:     s.Owner,
		message:   s.Message,
		options:   slices.Clone(s.PredefinedOptions),
		multi:     s.MultiSelect,
		free:      s.AllowFreeText,
		tokenHash: bytes.Clone(s.TokenHash),
		to:        slices.Clone(s.To),
		created:   created,
		deadline:  deadline,
	}
	if len(s.Metadata) > 0 {
		d.metadata = json.RawMessage(bytes.Clone(s.Metadata))
	}
	d.size = d.footprint()
	return d
}

// Get implements Store: the script, which records an expiry that is due.
// The waiting loop and everything that decides an outcome read here; Read
// is the cheaper form for reads that only show, Peek the first step of an
// answer or a cancel.
func (r *Redis) Get(ctx context.Context, id string) (*Session, error) {
	return r.run(ctx, "get", getScript, id)
}

// readFields are what Read asks for, in this order.
var readFields = []string{"status", "updated_ms", "nonce", "result", "submitted_ms", "created_ms", "deadline_ms", "data"}

// Read is Get for the reads that decide nothing (a status or result poll,
// the answer page, an owner check): the same answer from a cheaper command.
// Get runs a script because a read past the deadline records the expiry;
// a question that is not pending, or pending and more than ReadMargin from
// its deadline by this machine's clock, cannot be due, so one HMGET of its
// fields says the same. Within ReadMargin of the deadline Read is Get.
// Like Get it always asks Redis (so while Redis is away it fails with
// ErrUnavailable), and the immutable part of the question is decoded once.
//
// Reads of one question that arrive while one is on its way to Redis ride
// together on the next one (see readCoalescer), so each answer reflects
// Redis' state after the request arrived.
func (r *Redis) Read(ctx context.Context, id string) (*Session, error) {
	if r.closed.Load() {
		return nil, ErrUnavailable
	}
	d, st, err := r.reads.read(ctx, id, r.readOnce)
	if err != nil {
		return nil, err
	}
	return d.session(id, st), nil
}

// readOnce is one Read on the wire. ctx is the flight's own (see
// readCoalescer), never a caller's.
func (r *Redis) readOnce(ctx context.Context, id string) (*qdata, *qstate, error) {
	gen := r.cache.gen(id)
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	vals, err := r.client.Do(ctx, r.client.B().Hmget().Key(r.key(id)).Field(readFields...).Build()).ToArray()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read %s: %w", ErrUnavailable, id, err)
	}
	if len(vals) != len(readFields) {
		return nil, nil, fmt.Errorf("store: read %s: malformed reply of %d elements", id, len(vals))
	}
	if vals[0].IsNil() {
		return nil, nil, fmt.Errorf("read %s: %w", id, ErrNotFound)
	}
	fields := make([]string, len(vals))
	for i := range vals {
		fields[i], _ = vals[i].ToString() // nil: ""
	}
	var f rawFields
	f.status, f.updated, f.nonce, f.result, f.submitted, f.created, f.deadline, f.data =
		fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], fields[7]
	data, state, err := r.decodeFields(id, &f)
	if err != nil {
		return nil, nil, fmt.Errorf("store: read %s: malformed session: %w", id, err)
	}
	if state.status == StatusPending && !time.Now().Before(data.deadline.Add(-ReadMargin)) {
		// It may be due: the script decides, by Redis' clock.
		return r.runDecoded(ctx, "get", getScript, id)
	}
	r.cache.put(id, gen, data, state, time.Now())
	return data, state, nil
}

// readCoalescer lets concurrent reads of one question share round trips
// without ever answering from before a request arrived: a read that finds
// one of the same question on its way rides the next one, sent as soon as
// that one lands and carrying every read that arrived meanwhile. So under
// a burst of polls of one question Redis sees about one read per round
// trip, and each poll still gets a state read after it began. A read on
// the wire has its own context (bounded by defaultOpTimeout), so that
// callers going away change nothing for the others; and when it fails with
// ErrUnavailable, the reads waiting behind it get that error at once
// (Redis failed after they arrived), so nobody waits for two timeouts.
type readCoalescer struct {
	mu sync.Mutex
	m  map[string]*readPair
	// queued, in tests, is told of each read that queues behind another.
	queued func()
}

// readPair is the read of one question on the wire and the one that will
// follow it.
type readPair struct{ cur, next *readFlight }

type readFlight struct {
	done chan struct{}
	data *qdata
	st   *qstate
	err  error
}

type readFunc func(ctx context.Context, id string) (*qdata, *qstate, error)

func (c *readCoalescer) read(ctx context.Context, id string, fetch readFunc) (*qdata, *qstate, error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*readPair{}
	}
	p := c.m[id]
	if p == nil {
		f := &readFlight{done: make(chan struct{})}
		c.m[id] = &readPair{cur: f}
		c.mu.Unlock()
		c.fly(id, f, fetch)
		return f.data, f.st, f.err
	}
	if p.next == nil {
		p.next = &readFlight{done: make(chan struct{})}
	}
	f := p.next
	c.mu.Unlock()
	if c.queued != nil {
		c.queued()
	}
	select {
	case <-f.done:
		return f.data, f.st, f.err
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("%w: read %s: %w", ErrUnavailable, id, ctx.Err())
	}
}

// fly sends f; once it has landed, the read waiting behind it (if any)
// goes on the wire, on a goroutine of its own.
func (c *readCoalescer) fly(id string, f *readFlight, fetch readFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultOpTimeout)
	f.data, f.st, f.err = fetch(ctx, id)
	cancel()
	var failed *readFlight
	c.mu.Lock()
	p := c.m[id] // p.cur is f: only fly moves it
	switch next := p.next; {
	case next == nil:
		delete(c.m, id)
	case errors.Is(f.err, ErrUnavailable):
		next.err = f.err
		failed = next
		delete(c.m, id)
	default:
		p.cur, p.next = next, nil
		go c.fly(id, next, fetch)
	}
	c.mu.Unlock()
	close(f.done)
	if failed != nil {
		close(failed.done)
	}
}

// Peek is for the first step of an answer or a cancel: the question as this
// instance last knew it, however long ago, when that was pending. What it
// returns shares its slices with the store's copy: read it, never change it. Its
// immutable part (owner, question, options, token hash, deadline) is
// exact; its pending state may be out of date, which is harmless there
// because the script that follows decides the outcome from Redis' state.
// A terminal state is only taken from memory within CacheMaxAge; anything
// else is read from Redis.
func (r *Redis) Peek(ctx context.Context, id string) (*Session, error) {
	if r.closed.Load() {
		return nil, ErrUnavailable
	}
	if d, st, at := r.cache.lookup(id); st != nil && (st.status == StatusPending || time.Since(at) < CacheMaxAge) {
		return d.view(id, st), nil
	}
	// Read, not Get: an expiry that is due is the script's that follows to
	// find (it checks the deadline by Redis' clock before any change), so
	// the plain HMGET is enough here and costs Redis a fraction of the script.
	return r.Read(ctx, id)
}

// Submit implements Store.
func (r *Redis) Submit(ctx context.Context, id string, a Answer) (*Session, error) {
	// Never nil, so the stored JSON holds [] and every reader gets a list.
	ans, err := json.Marshal(redisAnswer{SelectedOptions: append([]string{}, a.SelectedOptions...), FreeText: a.FreeText, Via: a.Via, By: a.By, Answers: a.Answers, Attachments: a.Attachments})
	if err != nil {
		return nil, fmt.Errorf("store: submit %s: encoding: %w", id, err)
	}
	script := submitScript
	if a.Nonce != "" {
		script = submitNonceScript
	}
	return r.run(ctx, "submit", script, id, string(ans), a.Nonce)
}

// Cancel implements Store.
func (r *Redis) Cancel(ctx context.Context, id string) (*Session, error) {
	return r.run(ctx, "cancel", cancelScript, id)
}

// run executes a transition script and turns its reply into a session or
// one of the store errors.
func (r *Redis) run(ctx context.Context, op string, script *rueidis.Lua, id string, args ...string) (*Session, error) {
	d, st, err := r.runDecoded(ctx, op, script, id, args...)
	if err != nil {
		return nil, err
	}
	return d.session(id, st), nil
}

// runDecoded is run without the copy for the caller.
func (r *Redis) runDecoded(ctx context.Context, op string, script *rueidis.Lua, id string, args ...string) (retData *qdata, retState *qstate, retErr error) {
	if r.closed.Load() {
		return nil, nil, ErrUnavailable
	}
	gen := r.cache.gen(id)
	waiting := r.waitReplicas > 0 && op == "submit"
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); !ok && waiting {
		ctx, cancel = context.WithTimeout(ctx, defaultOpTimeout+r.waitTimeout)
	} else {
		ctx, cancel = withDefaultTimeout(ctx)
	}
	defer cancel()
	keys := [1]string{r.key(id)}
	argv := make([]string, 0, 2+len(args))
	argv = append(append(argv, r.channel(id), id), args...)
	var (
		reply []rueidis.RedisMessage
		err   error
		acks  = int64(-1) // replicas that confirmed; -1 when not asked
	)
	if waiting {
		reply, acks, err = r.execWaiting(ctx, submitSrc, keys[:], argv)
	} else {
		reply, err = script.Exec(ctx, r.client, keys[:], argv).ToArray()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s %s: %w", ErrUnavailable, op, id, err)
	}
	defer func() {
		// Applied on the primary but not on enough replicas: the caller is
		// told it is not saved yet, and a retry with the same nonce either
		// finds it (and waits again) or, after a failover lost it, stores it.
		if retErr == nil && acks >= 0 && acks < int64(r.waitReplicas) {
			retData, retState = nil, nil
			retErr = fmt.Errorf("%w: %s %s: stored on the primary but confirmed by %d of %d replica(s) within %v; retry with the same nonce",
				ErrUnavailable, op, id, acks, r.waitReplicas, r.waitTimeout)
		}
	}()
	if len(reply) < 2 {
		return nil, nil, fmt.Errorf("store: %s %s: malformed script reply of %d elements", op, id, len(reply))
	}
	code, err1 := reply[0].AsInt64()
	changed, err2 := reply[1].AsInt64()
	if err := errors.Join(err1, err2); err != nil {
		return nil, nil, fmt.Errorf("store: %s %s: malformed script reply: %w", op, id, err)
	}
	var (
		data  *qdata
		state *qstate
	)
	if len(reply) >= 3 && (code == codeOK || changed == 1) {
		fields, err := reply[2].ToArray()
		if err == nil {
			data, state, err = r.decode(id, fields)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("store: %s %s: malformed session: %w", op, id, err)
		}
	}
	switch {
	case changed == 1 || code != codeOK:
		// A change (ours), or an outcome that says our copy may be behind.
		r.cache.invalidate(id)
		if data != nil {
			r.cache.put(id, gen, data, nil, time.Time{})
		}
	case data != nil:
		r.cache.put(id, gen, data, state, time.Now())
	}
	if changed == 1 {
		r.changed(data.view(id, state)) // the hook takes its own copy
		// The SPUBLISH reaches our subscriber too, but local watchers should
		// not depend on the subscription being up.
		r.hub.notify(id)
	}
	switch code {
	case codeOK:
	case codeNotFound:
		return nil, nil, fmt.Errorf("%s %s: %w", op, id, ErrNotFound)
	case codeConflict:
		return nil, nil, fmt.Errorf("%s %s: %w", op, id, ErrConflict)
	case codeGone:
		return nil, nil, fmt.Errorf("%s %s: %w", op, id, ErrGone)
	default:
		return nil, nil, fmt.Errorf("store: %s %s: unknown script result %d", op, id, code)
	}
	if data == nil {
		return nil, nil, fmt.Errorf("store: %s %s: script reply without session", op, id)
	}
	return data, state, nil
}

// execWaiting runs the script src and then WAIT on one dedicated
// connection: WAIT counts the replicas that have every write made on its
// own connection, so on rueidis' shared pipeline (or its pool, where
// blocking commands go) it would wait for the wrong writes. It returns the
// script's reply and how many replicas confirmed it.
func (r *Redis) execWaiting(ctx context.Context, src string, keys, argv []string) (reply []rueidis.RedisMessage, acks int64, err error) {
	sum := sha1.Sum([]byte(src))
	sha := hex.EncodeToString(sum[:])
	timeoutMs := max(r.waitTimeout.Milliseconds(), 1)
	err = r.client.Dedicated(func(c rueidis.DedicatedClient) error {
		wait := func() rueidis.Completed {
			return c.B().Wait().Numreplicas(int64(r.waitReplicas)).Timeout(timeoutMs).Build()
		}
		res := c.DoMulti(ctx,
			c.B().Evalsha().Sha1(sha).Numkeys(int64(len(keys))).Key(keys...).Arg(argv...).Build(), wait())
		if e, ok := rueidis.IsRedisErr(res[0].Error()); ok && e.IsNoScript() {
			res = c.DoMulti(ctx,
				c.B().Eval().Script(src).Numkeys(int64(len(keys))).Key(keys...).Arg(argv...).Build(), wait())
		}
		var err error
		if reply, err = res[0].ToArray(); err != nil {
			return err
		}
		if acks, err = res[1].AsInt64(); err != nil {
			return fmt.Errorf("WAIT: %w", err)
		}
		return nil
	})
	return reply, acks, err
}

// rawFields are a session hash's fields as stored.
type rawFields struct{ data, status, nonce, result, created, deadline, updated, submitted string }

// decode reads a session hash (field, value, field, value, …).
func (r *Redis) decode(id string, fields []rueidis.RedisMessage) (*qdata, *qstate, error) {
	var f rawFields
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].ToString()
		v, _ := fields[i+1].ToString()
		switch k {
		case "data":
			f.data = v
		case "status":
			f.status = v
		case "nonce":
			f.nonce = v
		case "result":
			f.result = v
		case "created_ms":
			f.created = v
		case "deadline_ms":
			f.deadline = v
		case "updated_ms":
			f.updated = v
		case "submitted_ms":
			f.submitted = v
		}
	}
	return r.decodeFields(id, &f)
}

// decodeFields turns stored fields into a question. The immutable part is
// decoded once per question and shared (see qdata).
func (r *Redis) decodeFields(id string, f *rawFields) (*qdata, *qstate, error) {
	st := &qstate{status: Status(f.status), nonce: f.nonce}
	switch st.status {
	case StatusPending, StatusSubmitted, StatusExpired, StatusCancelled:
	default:
		return nil, nil, fmt.Errorf("unknown status %q", st.status)
	}
	created, err := parseMs("created_ms", f.created)
	if err != nil {
		return nil, nil, err
	}
	deadline, err := parseMs("deadline_ms", f.deadline)
	if err != nil {
		return nil, nil, err
	}
	if st.updated, err = parseMs("updated_ms", f.updated); err != nil {
		return nil, nil, err
	}
	d := r.cache.data(id, created, deadline)
	if d == nil {
		if d, err = decodeData([]byte(f.data), created, deadline); err != nil {
			return nil, nil, err
		}
	}
	if st.status == StatusSubmitted {
		var a redisAnswer
		if err := json.Unmarshal([]byte(f.result), &a); err != nil {
			return nil, nil, fmt.Errorf("decoding result: %w", err)
		}
		at, err := parseMs("submitted_ms", f.submitted)
		if err != nil {
			return nil, nil, err
		}
		st.result = &Result{SelectedOptions: a.SelectedOptions, FreeText: a.FreeText, SubmittedAt: at, Via: a.Via, AnsweredBy: a.By, Answers: a.Answers, Attachments: a.Attachments}
	}
	if st.status == StatusExpired {
		// The timeout policy's answer, derived from the immutable form as
		// the memory store derives it (see Session.timeoutResult).
		st.result = d.view("", st).timeoutResult()
	}
	return d, st, nil
}

func decodeData(data []byte, created, deadline time.Time) (*qdata, error) {
	var rd redisData
	if err := json.Unmarshal(data, &rd); err != nil {
		return nil, fmt.Errorf("decoding data: %w", err)
	}
	d := &qdata{
		owner:     rd.Owner,
		message:   rd.Message,
		options:   rd.PredefinedOptions,
		multi:     rd.MultiSelect,
		free:      rd.AllowFreeText,
		metadata:  rd.Metadata,
		tokenHash: rd.TokenHash,
		form:      rd.Form,
		to:        rd.To,
		created:   created,
		deadline:  deadline,
	}
	d.size = d.footprint()
	return d, nil
}

func parseMs(name, v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %s: %w", name, err)
	}
	return time.UnixMilli(n).UTC(), nil
}

// CacheMaxAge bounds how old a terminal state Peek answers from memory may
// be (a finished question is deleted after its retention).
const CacheMaxAge = time.Second

// ReadMargin is how close to its deadline (by this machine's clock) a
// pending question is read with the script rather than with Read's HMGET:
// clocks may disagree by that much before Read could miss an expiry.
const ReadMargin = time.Second

// cacheBudget bounds the memory the copies of one store take (an
// estimate: strings, slices and fixed overheads); past it, copies are
// dropped at random. About 10,000 typical questions: what an instance
// creates or reads in a while, and small enough that the garbage collector
// scanning it every cycle costs little (at 16 MiB it cost a status request
// a sixth of its CPU).
const cacheBudget = 4 << 20

// cacheShards is the number of change counters, each covering the ids that
// hash to it.
const cacheShards = 256

// qdata is the part of a question that never changes after Create: decoded
// once per question and instance, shared by every copy handed out (each
// gets its own slices).
type qdata struct {
	owner     Owner
	message   string
	options   []string
	multi     bool
	free      bool
	metadata  json.RawMessage
	tokenHash []byte
	form      *Form
	to        []string
	created   time.Time
	deadline  time.Time
	size      int
}

func (d *qdata) footprint() int {
	n := 256 + len(d.owner.Issuer) + len(d.owner.Subject) + len(d.message) + len(d.metadata) + len(d.tokenHash)
	for _, o := range d.options {
		n += 16 + len(o)
	}
	n += d.form.footprint()
	for _, p := range d.to {
		n += 16 + len(p)
	}
	return n
}

// qstate is the part that changes: the status and the answer.
type qstate struct {
	status  Status
	updated time.Time
	nonce   string
	result  *Result
}

// view is a Session of d in state st that shares d's slices and st's
// result: for readers that change nothing (Peek, the change hook, which
// copies what it keeps).
func (d *qdata) view(id string, st *qstate) *Session {
	return &Session{
		ID:                id,
		Owner:             d.owner,
		Message:           d.message,
		PredefinedOptions: d.options,
		MultiSelect:       d.multi,
		AllowFreeText:     d.free,
		Metadata:          d.metadata,
		TokenHash:         d.tokenHash,
		Form:              d.form,
		To:                d.to,
		CreatedAt:         d.created,
		ExpiresAt:         d.deadline,
		UpdatedAt:         st.updated,
		Status:            st.status,
		Nonce:             st.nonce,
		Result:            st.result,
	}
}

// session is a new Session of d in state st, sharing nothing mutable.
func (d *qdata) session(id string, st *qstate) *Session {
	s := &Session{
		ID:                id,
		Owner:             d.owner,
		Message:           d.message,
		PredefinedOptions: slices.Clone(d.options),
		MultiSelect:       d.multi,
		AllowFreeText:     d.free,
		Metadata:          bytes.Clone(d.metadata),
		TokenHash:         bytes.Clone(d.tokenHash),
		Form:              d.form.Clone(),
		To:                slices.Clone(d.to),
		CreatedAt:         d.created,
		ExpiresAt:         d.deadline,
		UpdatedAt:         st.updated,
		Status:            st.status,
		Nonce:             st.nonce,
	}
	if st.result != nil {
		r := *st.result
		r.SelectedOptions = slices.Clone(r.SelectedOptions)
		r.Answers = bytes.Clone(r.Answers)
		r.Attachments = slices.Clone(r.Attachments)
		s.Result = &r
	}
	return s
}

// sessionCache is what one Redis store remembers of the questions this
// instance created or read: each one's immutable part (exact for as long
// as the question exists) and its last read state (valid until a change is
// announced).
//
// A state read from Redis is stored only if no change to its id was
// announced since the read was sent (the shard's counter has not moved), so
// a slow reader cannot put back a state older than an announced change.
type sessionCache struct {
	gens    [cacheShards]atomic.Uint64
	mu      sync.RWMutex
	entries map[string]*cacheEntry
	bytes   int
}

type cacheEntry struct {
	data  *qdata
	state *qstate   // nil: unknown (a change was announced)
	at    time.Time // when state was read
}

func newSessionCache() *sessionCache {
	return &sessionCache{entries: map[string]*cacheEntry{}}
}

func shardOf(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % cacheShards)
}

// gen is id's change counter; take it before sending a read.
func (c *sessionCache) gen(id string) uint64 { return c.gens[shardOf(id)].Load() }

// data is id's immutable part, if known for the question created and due
// at these times (an id reused after its question was deleted is another
// question).
func (c *sessionCache) data(id string, created, deadline time.Time) *qdata {
	c.mu.RLock()
	e := c.entries[id]
	c.mu.RUnlock()
	if e == nil || !e.data.created.Equal(created) || !e.data.deadline.Equal(deadline) {
		return nil
	}
	return e.data
}

// lookup returns what is known of id; st is nil when its state is not.
func (c *sessionCache) lookup(id string) (d *qdata, st *qstate, at time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e := c.entries[id]; e != nil {
		return e.data, e.state, e.at
	}
	return nil, nil, time.Time{}
}

// put remembers d and, if nothing about id was announced since gen was
// taken, st as read at `at` (st nil: keep no state).
func (c *sessionCache) put(id string, gen uint64, d *qdata, st *qstate, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil || e.data != d {
		if e != nil {
			c.bytes -= e.data.size
		}
		e = &cacheEntry{data: d}
		c.entries[id] = e
		c.bytes += d.size
		if c.bytes > cacheBudget {
			c.evict()
		}
	}
	if st != nil && c.gens[shardOf(id)].Load() == gen {
		e.state, e.at = st, at
	}
}

// evict drops entries (in map order, which is random) until a budget's
// eighth is free. c.mu is held.
func (c *sessionCache) evict() {
	for id, e := range c.entries {
		if c.bytes <= cacheBudget-cacheBudget/8 {
			return
		}
		delete(c.entries, id)
		c.bytes -= e.data.size
	}
}

// invalidate forgets id's state: a change to it was announced or made.
func (c *sessionCache) invalidate(id string) {
	c.gens[shardOf(id)].Add(1)
	c.mu.Lock()
	if e := c.entries[id]; e != nil {
		e.state = nil
	}
	c.mu.Unlock()
}

// flush forgets every state: changes may have gone unannounced.
func (c *sessionCache) flush() {
	for i := range c.gens {
		c.gens[i].Add(1)
	}
	c.mu.Lock()
	for _, e := range c.entries {
		e.state = nil
	}
	c.mu.Unlock()
}

// clear forgets everything.
func (c *sessionCache) clear() {
	c.flush()
	c.mu.Lock()
	clear(c.entries)
	c.bytes = 0
	c.mu.Unlock()
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultOpTimeout)
}

// Watch implements Store. Signals come from this instance's own writes and
// from the question's channel, subscribed while it has a local watcher;
// its watchers are signalled whenever that subscription is (re)confirmed.
func (r *Redis) Watch(ctx context.Context, id string) <-chan struct{} {
	return r.hub.watch(ctx, id)
}

// Announce implements Store: SPUBLISH on topic's own sharded channel,
// which only the instances watching topic have subscribed to, and this
// instance's watchers directly (they must not depend on the subscription
// being up).
func (r *Redis) Announce(ctx context.Context, topic string) error {
	if err := checkKVKey(topic); err != nil {
		return err
	}
	if r.closed.Load() {
		return ErrUnavailable
	}
	r.hub.notify(topic)
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := r.client.Do(ctx, r.client.B().Spublish().Channel(r.channel(topic)).Message("1").Build()).Error(); err != nil {
		return fmt.Errorf("%w: announcing %s: %w", ErrUnavailable, topic, err)
	}
	return nil
}

// EventsReceived is how many change announcements this store has received
// from Redis since it opened: what one instance pays for the events of
// every instance (cmd/feedback-capacity reports it).
func (r *Redis) EventsReceived() int64 { return r.received.Load() }

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	if r.closed.Load() {
		return ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := r.client.Do(ctx, r.client.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("%w: ping: %w", ErrUnavailable, err)
	}
	return nil
}

// Close stops the subscriber, closes every Watch channel and, if NewRedis
// dialed it, the client. It is idempotent.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.stopSub()
		r.subWG.Wait()
		if r.own {
			r.client.Close()
		}
		r.cache.clear()
		r.hub.close()
	})
	return nil
}
