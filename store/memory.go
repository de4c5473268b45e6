package store

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// defaultJanitorInterval bounds how long a session nobody reads again stays
// in memory after its ttl. Reads drop stale entries themselves, so the
// janitor only exists to cap memory.
const defaultJanitorInterval = time.Minute

// DefaultMaxSessions is how many sessions a memory store holds unless
// MemoryOptions say otherwise. A typical session takes 0.5–1 KB of heap, one
// with every field at its limit about 52 KB (BenchmarkMemoryFootprint): about
// 20 MB typical, 1 GB at the very worst.
const DefaultMaxSessions = 20_000

// MemoryOptions configure a memory store.
type MemoryOptions struct {
	// MaxSessions caps the sessions held at once: pending ones and finished
	// ones still within their retention (the ttl given to Create). Entries
	// past their ttl do not count, swept or not. Past the cap, Create fails
	// with a *FullError (errors.Is ErrFull). Zero means DefaultMaxSessions;
	// a negative value means no cap.
	MaxSessions int
}

// ErrFull is wrapped by *FullError: the store holds as many sessions as it
// may. Callers answer 503 with Retry-After.
var ErrFull = errors.New("session store is full")

// FullError says how many sessions the store holds and when the first of
// them leaves it.
type FullError struct {
	Max        int
	RetryAfter time.Duration
	// MaxBytes, when set, is the byte cap that was reached (the values
	// kept beside sessions, such as images) rather than a count.
	MaxBytes int
}

func (e *FullError) Error() string {
	if e.MaxBytes > 0 {
		return fmt.Sprintf("the memory session store holds its maximum of %d MiB of images and other records", e.MaxBytes>>20)
	}
	return fmt.Sprintf("the memory session store holds its maximum of %d sessions", e.Max)
}

func (e *FullError) Unwrap() error { return ErrFull }

// Memory is a Store for a single process. It is the reference for the
// semantics the Redis backend must match, and what a deployment without
// Redis uses; sessions do not survive a restart.
type Memory struct {
	mu       sync.Mutex
	sessions map[string]*memEntry
	closed   bool

	hub *hub
	changeHook
	// memKV holds the records beside sessions (KV), under its own lock.
	*memKV
	// drops orders the entries by the time they leave (their ttl), so that
	// the janitor and a full Create find them without a scan. An item whose
	// entry is gone or was replaced is skipped when it comes up.
	drops dropHeap
	// max caps len(sessions); 0 means no cap.
	max int
	// quotas tracks, per owner, pending sessions and recent creates (see
	// Admit); guarded by mu. The janitor removes owners with neither.
	quotas map[Owner]*memQuota
	// now is the store clock; tests may replace it before first use.
	now func() time.Time

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type memEntry struct {
	s      Session
	dropAt time.Time
}

var _ Store = (*Memory)(nil)

type dropItem struct {
	at time.Time
	id string
}

type dropHeap []dropItem

func (h dropHeap) Len() int           { return len(h) }
func (h dropHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dropHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dropHeap) Push(x any)        { *h = append(*h, x.(dropItem)) }
func (h *dropHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// NewMemory returns an empty store with the default options and its
// janitor running; Close stops it.
func NewMemory() *Memory {
	return NewMemoryWith(MemoryOptions{})
}

// NewMemoryWith returns an empty store with its janitor running; Close stops it.
func NewMemoryWith(opts MemoryOptions) *Memory {
	return newMemoryWith(time.Now, defaultJanitorInterval, opts)
}

func newMemory(now func() time.Time, janitorEvery time.Duration) *Memory {
	return newMemoryWith(now, janitorEvery, MemoryOptions{})
}

func newMemoryWith(now func() time.Time, janitorEvery time.Duration, opts MemoryOptions) *Memory {
	m := &Memory{
		sessions: make(map[string]*memEntry),
		hub:      newHub(),
		now:      now,
		max:      opts.MaxSessions,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	m.memKV = newMemKV(func() time.Time { return m.now() })
	switch {
	case m.max == 0:
		m.max = DefaultMaxSessions
	case m.max < 0:
		m.max = 0
	}
	go m.janitor(janitorEvery)
	return m
}

func (m *Memory) janitor(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep drops every entry past its ttl and wakes its watchers, who then get
// ErrNotFound instead of waiting for a change that cannot come. It also
// forgets owners that have nothing pending and no create in the current
// rate window, so the quota table does not grow with every subject ever seen.
func (m *Memory) sweep() {
	now := m.now()
	m.mu.Lock()
	dropped := m.dropDue(now)
	m.sweepQuotas(now)
	m.mu.Unlock()
	m.sweepKV()
	for _, id := range dropped {
		m.hub.notify(id)
	}
}

// dropDue removes the entries whose ttl has passed and returns their ids.
// The caller holds m.mu and notifies the hub after unlocking.
func (m *Memory) dropDue(now time.Time) []string {
	var dropped []string
	for len(m.drops) > 0 && !now.Before(m.drops[0].at) {
		it := heap.Pop(&m.drops).(dropItem)
		if e, ok := m.sessions[it.id]; ok && !now.Before(e.dropAt) {
			delete(m.sessions, it.id)
			dropped = append(dropped, it.id)
		}
	}
	return dropped
}

// sweepQuotas prunes each owner's pending set and rate window and deletes
// owners left with neither. The caller holds m.mu.
func (m *Memory) sweepQuotas(now time.Time) {
	for owner, mq := range m.quotas {
		for len(mq.creates) > 0 && !now.Before(mq.creates[0].Add(rateWindow)) {
			mq.creates = mq.creates[1:]
		}
		for id, deadline := range mq.pending {
			if e, ok := m.live(id, now); !ok || !now.Before(deadline) || e.s.Status != StatusPending {
				delete(mq.pending, id)
			}
		}
		if len(mq.pending) == 0 && len(mq.creates) == 0 {
			delete(m.quotas, owner)
		}
	}
}

// Create implements Store.
func (m *Memory) Create(ctx context.Context, s *Session, ttl time.Duration) error {
	if err := checkCreate(s, ttl); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	c := cloneSession(s)
	c.Status = StatusPending
	c.Result = nil
	c.Nonce = ""
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}
	now := m.now()

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrUnavailable
	}
	if _, ok := m.live(s.ID, now); ok {
		m.mu.Unlock()
		return fmt.Errorf("create %s: %w", s.ID, ErrExists)
	}
	var dropped []string
	if m.max > 0 && len(m.sessions) >= m.max {
		// Only live entries count: drop the ones past their ttl that the
		// janitor has not reached yet.
		dropped = m.dropDue(now)
	}
	var err error
	if m.max > 0 && len(m.sessions) >= m.max {
		retry := time.Second
		if len(m.drops) > 0 {
			retry = max(m.drops[0].at.Sub(now), retry)
		}
		err = fmt.Errorf("create %s: %w", s.ID, &FullError{Max: m.max, RetryAfter: retry})
	} else {
		dropAt := now.Add(ttl)
		m.sessions[s.ID] = &memEntry{s: *c, dropAt: dropAt}
		heap.Push(&m.drops, dropItem{at: dropAt, id: s.ID})
	}
	m.mu.Unlock()
	for _, id := range dropped {
		m.hub.notify(id)
	}
	return err
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, id string) (*Session, error) {
	return m.update(ctx, "get", id, func(*Session, time.Time) error { return nil })
}

// Submit implements Store.
func (m *Memory) Submit(ctx context.Context, id string, a Answer) (*Session, error) {
	return m.update(ctx, "submit", id, func(s *Session, now time.Time) error {
		switch s.Status {
		case StatusPending:
			s.Status = StatusSubmitted
			s.Result = &Result{
				SelectedOptions: append([]string{}, a.SelectedOptions...), // never nil: readers expect a list
				FreeText:        a.FreeText,
				SubmittedAt:     now,
				Via:             a.Via,
				AnsweredBy:      a.By,
				Answers:         bytes.Clone(a.Answers),
				Attachments:     slices.Clone(a.Attachments),
			}
			s.Nonce = a.Nonce
			s.UpdatedAt = now
			return nil
		case StatusSubmitted:
			if a.Nonce != "" && a.Nonce == s.Nonce {
				return nil
			}
			return ErrConflict
		default:
			return ErrGone
		}
	})
}

// Cancel implements Store.
func (m *Memory) Cancel(ctx context.Context, id string) (*Session, error) {
	return m.update(ctx, "cancel", id, func(s *Session, now time.Time) error {
		switch s.Status {
		case StatusPending:
			s.Status = StatusCancelled
			s.UpdatedAt = now
			return nil
		case StatusCancelled:
			return nil
		case StatusSubmitted:
			return ErrConflict
		default:
			return ErrGone
		}
	})
}

// update runs fn on the stored session under the lock, after the deadline
// check, so that Get, Submit and Cancel share one definition of "expired".
// fn sees a pending session only while it is before its deadline, and must
// change nothing when it returns an error; the expiry itself is kept either way.
// Watchers are signalled when the status changed.
func (m *Memory) update(ctx context.Context, op, id string, fn func(s *Session, now time.Time) error) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	now := m.now()

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrUnavailable
	}
	e, ok := m.live(id, now)
	if !ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("%s %s: %w", op, id, ErrNotFound)
	}
	before := e.s.Status
	if before == StatusPending && now.After(e.s.ExpiresAt) {
		e.s.Status = StatusExpired
		// The session ended at its deadline, not when someone noticed.
		e.s.UpdatedAt = e.s.ExpiresAt
		e.s.Result = e.s.timeoutResult()
	}
	err := fn(&e.s, now)
	changed := e.s.Status != before
	var out, after *Session
	if err == nil {
		out = cloneSession(&e.s)
	}
	if changed {
		after = cloneSession(&e.s)
	}
	m.mu.Unlock()

	if changed {
		m.changed(after)
		m.hub.notify(id)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, id, err)
	}
	return out, nil
}

// live returns the entry for id, dropping it first if its ttl has passed.
// The caller holds m.mu.
func (m *Memory) live(id string, now time.Time) (*memEntry, bool) {
	e, ok := m.sessions[id]
	if !ok {
		return nil, false
	}
	if !now.Before(e.dropAt) {
		delete(m.sessions, id)
		return nil, false
	}
	return e, true
}

// Watch implements Store.
func (m *Memory) Watch(ctx context.Context, id string) <-chan struct{} {
	return m.hub.watch(ctx, id)
}

// Announce implements Store: this process is every instance there is.
func (m *Memory) Announce(ctx context.Context, topic string) error {
	if err := checkKVKey(topic); err != nil {
		return err
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return ErrUnavailable
	}
	m.hub.notify(topic)
	return nil
}

// Ping implements Store.
func (m *Memory) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrUnavailable
	}
	return nil
}

// Close stops the janitor, closes every Watch channel and makes later calls
// fail with ErrUnavailable. It is idempotent.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.sessions = nil
		m.drops = nil
		m.quotas = nil
		m.mu.Unlock()
		m.closeKV()
		close(m.stop)
		<-m.done
		m.hub.close()
	})
	return nil
}

// checkCreate rejects arguments no caller should pass; they are programming
// errors, not conditions of the store.
func checkCreate(s *Session, ttl time.Duration) error {
	switch {
	case s == nil:
		return errors.New("store: create: nil session")
	case s.ID == "":
		return errors.New("store: create: empty session id")
	case s.ExpiresAt.IsZero():
		return fmt.Errorf("store: create %s: no deadline", s.ID)
	case ttl < time.Millisecond:
		return fmt.Errorf("store: create %s: ttl %v is below 1ms", s.ID, ttl)
	}
	return nil
}

// cloneSession deep-copies s, so that neither the caller nor the store sees
// the other's later changes. Nil slices stay nil.
func cloneSession(s *Session) *Session {
	c := *s
	c.PredefinedOptions = slices.Clone(s.PredefinedOptions)
	c.Metadata = bytes.Clone(s.Metadata)
	c.TokenHash = bytes.Clone(s.TokenHash)
	c.Form = s.Form.Clone()
	c.To = slices.Clone(s.To)
	if s.Result != nil {
		r := *s.Result
		r.SelectedOptions = slices.Clone(s.Result.SelectedOptions)
		r.Answers = bytes.Clone(s.Result.Answers)
		r.Attachments = slices.Clone(s.Result.Attachments)
		c.Result = &r
	}
	return &c
}
