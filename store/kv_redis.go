package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Redis layout of KV: a string per value at <prefix>kv:{<key>} with PX, and
// a sorted set per set at <prefix>kvs:{<key>} whose scores are the members'
// end times in Unix milliseconds; the set's own TTL follows its
// longest-lived member. Every operation touches one key, so Redis Cluster
// needs nothing more.
func (r *Redis) kvKey(key string) string { return r.prefix + "kv:{" + key + "}" }
func (r *Redis) kvSet(key string) string { return r.prefix + "kvs:{" + key + "}" }
func ttlMs(ttl time.Duration) int64      { return max(ttl.Milliseconds(), 1) }
func (r *Redis) kvErr(op, key string, err error) error {
	return fmt.Errorf("%w: kv %s %s: %w", ErrUnavailable, op, key, err)
}

// Put implements KV.
func (r *Redis) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	_, err := r.kvStore(ctx, "put", key, value, ttl, false)
	return err
}

// PutNew implements KV.
func (r *Redis) PutNew(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return r.kvStore(ctx, "put-new", key, value, ttl, true)
}

// kvStore is SET … PX, with NX when onlyNew; it reports whether it stored.
func (r *Redis) kvStore(ctx context.Context, op, key string, value []byte, ttl time.Duration, onlyNew bool) (bool, error) {
	if err := checkKVPut(key, value, ttl); err != nil {
		return false, err
	}
	if r.closed.Load() {
		return false, ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var cmd rueidis.Completed
	if onlyNew {
		cmd = r.client.B().Set().Key(r.kvKey(key)).Value(rueidis.BinaryString(value)).Nx().PxMilliseconds(ttlMs(ttl)).Build()
	} else {
		cmd = r.client.B().Set().Key(r.kvKey(key)).Value(rueidis.BinaryString(value)).PxMilliseconds(ttlMs(ttl)).Build()
	}
	err := r.client.Do(ctx, cmd).Error()
	switch {
	case onlyNew && rueidis.IsRedisNil(err):
		return false, nil
	case err != nil:
		return false, r.kvErr(op, key, err)
	}
	return true, nil
}

// Load implements KV.
func (r *Redis) Load(ctx context.Context, key string) ([]byte, error) {
	if err := checkKVKey(key); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	return r.kvBytes(ctx, "load", key, r.client.B().Get().Key(r.kvKey(key)).Build())
}

// Take implements KV with GETDEL, which is atomic.
func (r *Redis) Take(ctx context.Context, key string) ([]byte, error) {
	if err := checkKVKey(key); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	return r.kvBytes(ctx, "take", key, r.client.B().Getdel().Key(r.kvKey(key)).Build())
}

func (r *Redis) kvBytes(ctx context.Context, op, key string, cmd rueidis.Completed) ([]byte, error) {
	v, err := r.client.Do(ctx, cmd).AsBytes()
	switch {
	case rueidis.IsRedisNil(err):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	case err != nil:
		return nil, r.kvErr(op, key, err)
	}
	return v, nil
}

// Delete implements KV.
func (r *Redis) Delete(ctx context.Context, key string) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	if r.closed.Load() {
		return ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := r.client.Do(ctx, r.client.B().Del().Key(r.kvKey(key)).Build()).Error(); err != nil {
		return r.kvErr("delete", key, err)
	}
	return nil
}

// addMemberScript adds or moves a member, drops members whose time has
// passed, refuses a set at its cap, and makes the key live as long as its
// longest-lived member. KEYS[1] set; ARGV: member, until ms, now ms, cap.
var addMemberScript = rueidis.NewLuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local ttl = tonumber(last[2]) - tonumber(ARGV[3])
if ttl < 1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1`)

// AddMember implements KV.
func (r *Redis) AddMember(ctx context.Context, key, member string, until time.Time) error {
	if err := checkKVMember(key, member); err != nil {
		return err
	}
	if r.closed.Load() {
		return ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	now := time.Now()
	ok, err := addMemberScript.Exec(ctx, r.client, []string{r.kvSet(key)},
		[]string{member, ms(until), ms(now), strconv.Itoa(MaxKVMembers)}).AsInt64()
	if err != nil {
		return r.kvErr("add-member", key, err)
	}
	if ok == 0 {
		return fmt.Errorf("%w: set %s holds its maximum of %d members", ErrFull, key, MaxKVMembers)
	}
	return nil
}

// RemoveMember implements KV.
func (r *Redis) RemoveMember(ctx context.Context, key, member string) error {
	if err := checkKVMember(key, member); err != nil {
		return err
	}
	if r.closed.Load() {
		return ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := r.client.Do(ctx, r.client.B().Zrem().Key(r.kvSet(key)).Member(member).Build()).Error(); err != nil {
		return r.kvErr("remove-member", key, err)
	}
	return nil
}

// Members implements KV.
func (r *Redis) Members(ctx context.Context, key string) ([]string, error) {
	if err := checkKVKey(key); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, ErrUnavailable
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	cmd := r.client.B().Zrange().Key(r.kvSet(key)).Min("("+ms(time.Now())).Max("+inf").Byscore().Limit(0, MaxKVMembers).Build()
	out, err := r.client.Do(ctx, cmd).AsStrSlice()
	if err != nil {
		return nil, r.kvErr("members", key, err)
	}
	return out, nil
}
