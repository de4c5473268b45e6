package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MaxMemoryKV caps the records (values plus set members) a memory store
// keeps beside its sessions, so that a flood of registrations or sign-ins
// cannot grow the heap without bound. Past it, writes fail with a
// *FullError until records expire.
const MaxMemoryKV = 200_000

// MaxMemoryKVBytes caps the bytes of the values a memory store keeps beside
// its sessions: a question's images (up to 4 MiB each) must not let the
// askers grow the heap without bound. Past it, writes fail with a
// *FullError (503 with Retry-After) until records expire; a deployment
// that needs more uses Redis.
const MaxMemoryKVBytes = 512 << 20

// memKV is the memory store's KV. It has its own lock: records and
// sessions never change together.
type memKV struct {
	mu     sync.Mutex
	now    func() time.Time
	closed bool
	vals   map[string]kvEntry
	sets   map[string]map[string]time.Time
	count  int // len(vals) + members over all sets
	bytes  int // the bytes of all values in vals
	// maxBytes is MaxMemoryKVBytes; tests lower it.
	maxBytes int
}

type kvEntry struct {
	v     []byte
	until time.Time
}

func newMemKV(now func() time.Time) *memKV {
	return &memKV{now: now, vals: map[string]kvEntry{}, sets: map[string]map[string]time.Time{}, maxBytes: MaxMemoryKVBytes}
}

func (k *memKV) usable() error {
	if k.closed {
		return ErrUnavailable
	}
	return nil
}

func (k *memKV) room() error {
	if k.count >= MaxMemoryKV {
		return &FullError{Max: MaxMemoryKV, RetryAfter: time.Minute}
	}
	return nil
}

// roomFor is room for a value of n more bytes.
func (k *memKV) roomFor(n int) error {
	if k.bytes+n > k.maxBytes {
		return &FullError{MaxBytes: k.maxBytes, RetryAfter: time.Minute}
	}
	return nil
}

// dropVal removes key's value, which is e.
func (k *memKV) dropVal(key string, e kvEntry) {
	delete(k.vals, key)
	k.count--
	k.bytes -= len(e.v)
}

// liveVal returns key's entry if it has not expired, dropping it if it has.
func (k *memKV) liveVal(key string, now time.Time) (kvEntry, bool) {
	e, ok := k.vals[key]
	if !ok {
		return e, false
	}
	if !now.Before(e.until) {
		k.dropVal(key, e)
		// Nothing is there any more: callers that count bytes must not
		// subtract this value twice.
		return kvEntry{}, false
	}
	return e, true
}

func (k *memKV) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	_, err := k.put(key, value, ttl, false)
	return err
}

func (k *memKV) PutNew(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	return k.put(key, value, ttl, true)
}

// put stores value under key (only when nothing live is there, if
// onlyNew) and reports whether it did.
func (k *memKV) put(key string, value []byte, ttl time.Duration, onlyNew bool) (bool, error) {
	if err := checkKVPut(key, value, ttl); err != nil {
		return false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.usable(); err != nil {
		return false, err
	}
	now := k.now()
	old, ok := k.liveVal(key, now)
	if ok && onlyNew {
		return false, nil
	}
	if err := k.roomFor(len(value) - len(old.v)); err != nil {
		return false, err
	}
	if !ok {
		if err := k.room(); err != nil {
			return false, err
		}
		k.count++
	}
	k.bytes += len(value) - len(old.v)
	k.vals[key] = kvEntry{v: append([]byte(nil), value...), until: now.Add(ttl)}
	return true, nil
}

func (k *memKV) Load(ctx context.Context, key string) ([]byte, error) { return k.get(key, false) }

func (k *memKV) Take(ctx context.Context, key string) ([]byte, error) { return k.get(key, true) }

// get returns a copy of key's live value, dropping it when take is set.
func (k *memKV) get(key string, take bool) ([]byte, error) {
	if err := checkKVKey(key); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.usable(); err != nil {
		return nil, err
	}
	e, ok := k.liveVal(key, k.now())
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if take {
		k.dropVal(key, e)
		return e.v, nil
	}
	return append([]byte(nil), e.v...), nil
}

func (k *memKV) Delete(ctx context.Context, key string) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.usable(); err != nil {
		return err
	}
	if e, ok := k.vals[key]; ok {
		k.dropVal(key, e)
	}
	return nil
}

func (k *memKV) AddMember(ctx context.Context, key, member string, until time.Time) error {
	if err := checkKVMember(key, member); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.usable(); err != nil {
		return err
	}
	set := k.sets[key]
	if set == nil {
		set = map[string]time.Time{}
		k.sets[key] = set
	}
	if _, ok := set[member]; !ok {
		if len(set) >= MaxKVMembers {
			return fmt.Errorf("%w: set %s holds its maximum of %d members", ErrFull, key, MaxKVMembers)
		}
		if err := k.room(); err != nil {
			return err
		}
		k.count++
	}
	set[member] = until
	return nil
}

func (k *memKV) RemoveMember(ctx context.Context, key, member string) error {
	if err := checkKVMember(key, member); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.usable(); err != nil {
		return err
	}
	if set := k.sets[key]; set != nil {
		if _, ok := set[member]; ok {
			delete(set, member)
			k.count--
		}
		if len(set) == 0 {
			delete(k.sets, key)
		}
	}
	return nil
}

func (k *memKV) Members(ctx context.Context, key string) ([]string, error) {
	if err := checkKVKey(key); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.usable(); err != nil {
		return nil, err
	}
	now := k.now()
	set := k.sets[key]
	out := make([]string, 0, len(set))
	for m, until := range set {
		if !now.Before(until) {
			delete(set, m)
			k.count--
			continue
		}
		out = append(out, m)
	}
	if set != nil && len(set) == 0 {
		delete(k.sets, key)
	}
	return out, nil
}

// sweepKV drops every expired record; the memory store's janitor calls it.
func (k *memKV) sweepKV() {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for key, e := range k.vals {
		if !now.Before(e.until) {
			k.dropVal(key, e)
		}
	}
	for key, set := range k.sets {
		for m, until := range set {
			if !now.Before(until) {
				delete(set, m)
				k.count--
			}
		}
		if len(set) == 0 {
			delete(k.sets, key)
		}
	}
}

func (k *memKV) closeKV() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	k.vals, k.sets, k.count, k.bytes = nil, nil, 0, 0
}
