package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Quota bounds what one owner may have open at once and start per minute.
// Sessions cost memory (up to about 9 KB each) and a person's attention, so
// a runaway agent must not be able to flood either. Zero disables a limit.
type Quota struct {
	MaxPending       int
	CreatesPerMinute int
}

// ErrQuota is wrapped by *QuotaError.
var ErrQuota = errors.New("quota exceeded")

// QuotaError says which limit was hit and when trying again can succeed.
type QuotaError struct {
	Limit      string // "pending" or "rate"
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	if e.Limit == "rate" {
		return "too many questions created in the last minute"
	}
	return "too many questions waiting for an answer"
}

func (e *QuotaError) Unwrap() error { return ErrQuota }

// Limiter is implemented by stores that can enforce a Quota across every
// instance that shares them.
type Limiter interface {
	// Admit records that owner is about to create session id with the
	// given deadline, or returns a *QuotaError when a limit is reached.
	Admit(ctx context.Context, owner Owner, id string, deadline time.Time, q Quota) error
}

const rateWindow = time.Minute

// --- memory ---

type memQuota struct {
	pending map[string]time.Time // id → deadline
	creates []time.Time          // within the last rateWindow, oldest first
}

// Admit implements Limiter.
func (m *Memory) Admit(ctx context.Context, owner Owner, id string, deadline time.Time, q Quota) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrUnavailable
	}
	if m.quotas == nil {
		m.quotas = map[Owner]*memQuota{}
	}
	mq := m.quotas[owner]
	if mq == nil {
		mq = &memQuota{pending: map[string]time.Time{}}
		m.quotas[owner] = mq
	}
	for len(mq.creates) > 0 && !now.Before(mq.creates[0].Add(rateWindow)) {
		mq.creates = mq.creates[1:]
	}
	if q.CreatesPerMinute > 0 && len(mq.creates) >= q.CreatesPerMinute {
		return &QuotaError{Limit: "rate", RetryAfter: mq.creates[0].Add(rateWindow).Sub(now)}
	}
	var earliest time.Time
	for pid, dl := range mq.pending {
		e, ok := m.live(pid, now)
		if !now.Before(dl) || !ok || e.s.Status != StatusPending {
			delete(mq.pending, pid)
			continue
		}
		if earliest.IsZero() || dl.Before(earliest) {
			earliest = dl
		}
	}
	if q.MaxPending > 0 && len(mq.pending) >= q.MaxPending {
		return &QuotaError{Limit: "pending", RetryAfter: earliest.Sub(now)}
	}
	mq.pending[id] = deadline
	mq.creates = append(mq.creates, now)
	return nil
}

// --- redis ---

// admitScript keeps, per owner, a sorted set of pending session ids scored
// by deadline (KEYS[1]) and one of recent creates scored by time (KEYS[2]).
// Both keys share the owner's hash tag, so one script can touch both in a
// cluster. Sessions answered before their deadline still count until the
// caller prunes them (reply code 2 lists the ids to check), because the
// submit script cannot touch a key in another slot.
// ARGV: id, deadline_ms, max_pending, creates_per_minute, window_ms.
var admitScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local per_min = tonumber(ARGV[4])
if per_min > 0 and redis.call('ZCARD', KEYS[2]) >= per_min then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {1, tonumber(oldest[2]) + window - now}
end
local max_pending = tonumber(ARGV[3])
if max_pending > 0 and redis.call('ZCARD', KEYS[1]) >= max_pending then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {2, tonumber(first[2]) - now, redis.call('ZRANGE', KEYS[1], 0, -1)}
end
local dl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], dl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < dl - now + 1000 then redis.call('PEXPIRE', KEYS[1], dl - now + 1000) end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], window)
return {0, 0}
`)

func (r *Redis) quotaKeys(owner Owner) []string {
	// Owner strings are the caller's claims: hash them so no character of
	// theirs can end up in a key or a hash tag.
	h := sha256.Sum256([]byte(owner.Issuer + "\x00" + owner.Subject))
	tag := "{" + hex.EncodeToString(h[:12]) + "}"
	return []string{r.prefix + "op:" + tag, r.prefix + "oc:" + tag}
}

// Admit implements Limiter.
func (r *Redis) Admit(ctx context.Context, owner Owner, id string, deadline time.Time, q Quota) error {
	if r.closed.Load() {
		return ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	keys := r.quotaKeys(owner)
	args := []string{id, ms(deadline), fmt.Sprint(q.MaxPending), fmt.Sprint(q.CreatesPerMinute), fmt.Sprint(rateWindow.Milliseconds())}
	for attempt := 0; ; attempt++ {
		reply, err := admitScript.Exec(ctx, r.client, keys, args).ToArray()
		if err != nil {
			return fmt.Errorf("%w: admit: %w", ErrUnavailable, err)
		}
		code, _ := reply[0].AsInt64()
		wait, _ := reply[1].AsInt64()
		switch code {
		case 0:
			return nil
		case 1:
			return &QuotaError{Limit: "rate", RetryAfter: time.Duration(wait) * time.Millisecond}
		}
		// The pending set is full by deadline; drop the ids that are no
		// longer pending (answered, cancelled, gone) and try once more.
		ids, _ := reply[2].AsStrSlice()
		if attempt > 0 || !r.prunePending(ctx, keys[0], ids) {
			return &QuotaError{Limit: "pending", RetryAfter: time.Duration(wait) * time.Millisecond}
		}
	}
}

// prunePending removes ids that are no longer pending from an owner's set
// and reports whether any were removed.
func (r *Redis) prunePending(ctx context.Context, key string, ids []string) bool {
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = r.client.B().Hget().Key(r.key(id)).Field("status").Build()
	}
	var done []string
	for i, resp := range r.client.DoMulti(ctx, cmds...) {
		st, err := resp.ToString()
		if rueidis.IsRedisNil(err) || (err == nil && st != string(StatusPending)) {
			done = append(done, ids[i])
		}
	}
	if len(done) == 0 {
		return false
	}
	return r.client.Do(ctx, r.client.B().Zrem().Key(key).Member(done...).Build()).Error() == nil
}

var (
	_ Limiter = (*Memory)(nil)
	_ Limiter = (*Redis)(nil)
)
