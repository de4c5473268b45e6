package store

import (
	"bytes"
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

// Memory is a Store for a single process. It is the reference for the
// semantics the Redis backend must match, and what a deployment without
// Redis uses; sessions do not survive a restart.
type Memory struct {
	mu       sync.Mutex
	sessions map[string]*memEntry
	closed   bool

	hub *hub
	changeHook
	// quotas tracks, per owner, pending sessions and recent creates (see
	// Admit); guarded by mu.
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

// NewMemory returns an empty store with its janitor running; Close stops it.
func NewMemory() *Memory {
	return newMemory(time.Now, defaultJanitorInterval)
}

func newMemory(now func() time.Time, janitorEvery time.Duration) *Memory {
	m := &Memory{
		sessions: make(map[string]*memEntry),
		hub:      newHub(),
		now:      now,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
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
// ErrNotFound instead of waiting for a change that cannot come.
func (m *Memory) sweep() {
	now := m.now()
	var dropped []string
	m.mu.Lock()
	for id, e := range m.sessions {
		if !now.Before(e.dropAt) {
			delete(m.sessions, id)
			dropped = append(dropped, id)
		}
	}
	m.mu.Unlock()
	for _, id := range dropped {
		m.hub.notify(id)
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
	defer m.mu.Unlock()
	if m.closed {
		return ErrUnavailable
	}
	if _, ok := m.live(s.ID, now); ok {
		return fmt.Errorf("create %s: %w", s.ID, ErrExists)
	}
	m.sessions[s.ID] = &memEntry{s: *c, dropAt: now.Add(ttl)}
	return nil
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
		m.mu.Unlock()
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
	if s.Result != nil {
		r := *s.Result
		r.SelectedOptions = slices.Clone(s.Result.SelectedOptions)
		c.Result = &r
	}
	return &c
}
