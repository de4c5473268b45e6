package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
	// open. It must not have client-side caching enabled for our keys.
	Client rueidis.Client
}

// Redis is a Store shared by every instance that points at the same Redis
// and prefix. Redis is the only clock: every deadline decision and every
// transition happens inside one Lua script, so instances with skewed clocks
// cannot disagree, and a submit is applied at most once.
//
// Layout: one hash per session at <prefix>s:{<id>} (the braces are a Redis
// Cluster hash tag, so a session stays in one slot), with a TTL of the ttl
// given to Create; transitions never touch the TTL. Each transition PUBLISHes
// the id on <prefix>events, which wakes watchers on every instance.
type Redis struct {
	client  rueidis.Client
	own     bool
	prefix  string
	channel string
	hub     *hub
	changeHook

	closed    atomic.Bool
	closeOnce sync.Once
	stopSub   context.CancelFunc
	subDone   chan struct{}
	// subscribed counts subscribe confirmations; tests wait on it to tell
	// the first subscription from a resubscribe.
	subscribed atomic.Int64
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
	}
	if r.prefix == "" {
		r.prefix = DefaultKeyPrefix
	}
	r.channel = r.prefix + "events"
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
		// We never use DoCache, so tracking would only cost a round trip
		// per connection and invalidation traffic.
		co.DisableCache = true
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

	ctx, cancel := context.WithCancel(context.Background())
	r.stopSub = cancel
	r.subDone = make(chan struct{})
	go r.subscribe(ctx)
	return r, nil
}

// subscribe keeps one subscription to the events channel for the life of
// the store. rueidis resubscribes by itself after a reconnect; the loop only
// covers Receive giving up (an UNSUBSCRIBE from the server, an ACL error).
//
// Pub/sub is a hint: messages published while the subscription was down are
// lost. So on every subscribe confirmation every local watcher is signalled
// and re-reads its session, which covers whatever changed in the gap.
func (r *Redis) subscribe(ctx context.Context) {
	defer close(r.subDone)
	var confirmed atomic.Bool
	hookCtx := rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		// Runs on the connection's reader goroutine: hub calls never block.
		if s.Kind == "subscribe" && s.Channel == r.channel {
			confirmed.Store(true)
			r.hub.notifyAll()
			r.subscribed.Add(1)
		}
	})
	backoff := subscribeMinBackoff
	for {
		confirmed.Store(false)
		_ = r.client.Receive(hookCtx, r.client.B().Subscribe().Channel(r.channel).Build(),
			func(m rueidis.PubSubMessage) { r.hub.notify(m.Message) })
		if ctx.Err() != nil {
			return
		}
		if confirmed.Load() {
			backoff = subscribeMinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, subscribeMaxBackoff)
	}
}

func (r *Redis) key(id string) string { return r.prefix + "s:{" + id + "}" }

// Result codes of the scripts: {code, changed, HGETALL...}.
const (
	codeNotFound = 0
	codeOK       = 1
	codeConflict = 2
	codeGone     = 3
)

// luaPrelude is shared by the transition scripts. KEYS[1] is the session
// hash, ARGV[1] the events channel and ARGV[2] the session id.
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
    redis.call('PUBLISH', ARGV[1], ARGV[2])
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
  redis.call('PUBLISH', ARGV[1], ARGV[2])
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
  redis.call('PUBLISH', ARGV[1], ARGV[2])
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
}

// redisAnswer is the stored answer; its time is the submitted_ms field,
// which only the script knows.
type redisAnswer struct {
	SelectedOptions []string `json:"selectedOptions"`
	FreeText        string   `json:"freeText"`
	Via             string   `json:"via,omitempty"`
	By              string   `json:"by,omitempty"`
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
	return nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, id string) (*Session, error) {
	return r.run(ctx, "get", getScript, id)
}

// Submit implements Store.
func (r *Redis) Submit(ctx context.Context, id string, a Answer) (*Session, error) {
	// Never nil, so the stored JSON holds [] and every reader gets a list.
	ans, err := json.Marshal(redisAnswer{SelectedOptions: append([]string{}, a.SelectedOptions...), FreeText: a.FreeText, Via: a.Via, By: a.By})
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
	if r.closed.Load() {
		return nil, ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	reply, err := script.Exec(ctx, r.client, []string{r.key(id)},
		append([]string{r.channel, id}, args...)).ToArray()
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrUnavailable, op, id, err)
	}
	if len(reply) < 2 {
		return nil, fmt.Errorf("store: %s %s: malformed script reply of %d elements", op, id, len(reply))
	}
	code, err1 := reply[0].AsInt64()
	changed, err2 := reply[1].AsInt64()
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("store: %s %s: malformed script reply: %w", op, id, err)
	}
	// Decode the session once: the caller and the change hook share it.
	var sess *Session
	if len(reply) >= 3 && (code == codeOK || changed == 1) {
		fields, err := reply[2].AsStrMap()
		if err != nil {
			return nil, fmt.Errorf("store: %s %s: malformed session: %w", op, id, err)
		}
		if sess, err = decodeRedisSession(id, fields); err != nil {
			return nil, fmt.Errorf("store: %s %s: %w", op, id, err)
		}
	}
	if changed == 1 {
		r.changed(sess)
		// The PUBLISH reaches our subscriber too, but local watchers should
		// not depend on the subscription being up.
		r.hub.notify(id)
	}
	switch code {
	case codeOK:
	case codeNotFound:
		return nil, fmt.Errorf("%s %s: %w", op, id, ErrNotFound)
	case codeConflict:
		return nil, fmt.Errorf("%s %s: %w", op, id, ErrConflict)
	case codeGone:
		return nil, fmt.Errorf("%s %s: %w", op, id, ErrGone)
	default:
		return nil, fmt.Errorf("store: %s %s: unknown script result %d", op, id, code)
	}
	if sess == nil {
		return nil, fmt.Errorf("store: %s %s: script reply without session", op, id)
	}
	return sess, nil
}

func decodeRedisSession(id string, f map[string]string) (*Session, error) {
	var d redisData
	if err := json.Unmarshal([]byte(f["data"]), &d); err != nil {
		return nil, fmt.Errorf("decoding data: %w", err)
	}
	s := &Session{
		ID:                id,
		Owner:             d.Owner,
		Message:           d.Message,
		PredefinedOptions: d.PredefinedOptions,
		MultiSelect:       d.MultiSelect,
		AllowFreeText:     d.AllowFreeText,
		Metadata:          d.Metadata,
		TokenHash:         d.TokenHash,
		Status:            Status(f["status"]),
		Nonce:             f["nonce"],
	}
	switch s.Status {
	case StatusPending, StatusSubmitted, StatusExpired, StatusCancelled:
	default:
		return nil, fmt.Errorf("unknown status %q", s.Status)
	}
	var err error
	if s.CreatedAt, err = parseMs(f, "created_ms"); err != nil {
		return nil, err
	}
	if s.ExpiresAt, err = parseMs(f, "deadline_ms"); err != nil {
		return nil, err
	}
	if s.UpdatedAt, err = parseMs(f, "updated_ms"); err != nil {
		return nil, err
	}
	if s.Status == StatusSubmitted {
		var a redisAnswer
		if err := json.Unmarshal([]byte(f["result"]), &a); err != nil {
			return nil, fmt.Errorf("decoding result: %w", err)
		}
		at, err := parseMs(f, "submitted_ms")
		if err != nil {
			return nil, err
		}
		s.Result = &Result{SelectedOptions: a.SelectedOptions, FreeText: a.FreeText, SubmittedAt: at, Via: a.Via, AnsweredBy: a.By}
	}
	return s, nil
}

func parseMs(f map[string]string, name string) (time.Time, error) {
	v, err := strconv.ParseInt(f[name], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %s: %w", name, err)
	}
	return time.UnixMilli(v).UTC(), nil
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultOpTimeout)
}

// Watch implements Store. Signals come from this instance's own writes and
// from the events channel, and every watcher is signalled after the
// subscription is re-established.
func (r *Redis) Watch(ctx context.Context, id string) <-chan struct{} {
	return r.hub.watch(ctx, id)
}

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
		<-r.subDone
		if r.own {
			r.client.Close()
		}
		r.hub.close()
	})
	return nil
}
