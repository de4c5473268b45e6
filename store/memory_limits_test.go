package store

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestMemoryForgetsIdleOwners: the quota table holds an owner only while it
// has something pending or a create in the current minute; the janitor
// removes the rest, so it does not grow with every subject ever seen.
func TestMemoryForgetsIdleOwners(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	m := newMemory(clock.Now, time.Hour) // the test sweeps by hand
	defer m.Close()
	q := Quota{MaxPending: 5, CreatesPerMinute: 5}
	create := func(owner Owner, id string, timeout time.Duration) {
		t.Helper()
		deadline := clock.Now().Add(timeout)
		if err := m.Admit(t.Context(), owner, id, deadline, q); err != nil {
			t.Fatal(err)
		}
		s := &Session{ID: id, Owner: owner, CreatedAt: clock.Now(), ExpiresAt: deadline}
		if err := m.Create(t.Context(), s, timeout+time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	owners := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.quotas)
	}
	for i := range 1000 {
		create(Owner{Subject: fmt.Sprint("agent-", i)}, fmt.Sprint("s-", i), 5*time.Minute)
	}
	for i := range 500 { // half of them answered at once
		if _, err := m.Submit(t.Context(), fmt.Sprint("s-", i), Answer{FreeText: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	m.sweep()
	if n := owners(); n != 1000 {
		t.Fatalf("%d owners right after creating; all created within the minute", n)
	}
	// Past the rate window: answered owners have nothing left; the others
	// are still pending (deadline in 5 minutes).
	clock.Add(rateWindow + time.Second)
	create(Owner{Subject: "late"}, "late-1", 10*time.Minute)
	m.sweep()
	if n := owners(); n != 501 {
		t.Fatalf("%d owners after the window, want 500 pending + late", n)
	}
	// Past every deadline and the late create's window.
	clock.Add(11 * time.Minute)
	m.sweep()
	if n := owners(); n != 0 {
		t.Fatalf("%d owners left with nothing pending and no recent create", n)
	}
	// A forgotten owner starts afresh.
	create(Owner{Subject: "agent-1"}, "again", time.Minute)
}

// TestMemoryCap: past MaxSessions Create fails with ErrFull and a
// Retry-After of when the first entry leaves; entries past their ttl do not
// count even before the janitor runs.
func TestMemoryCap(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	m := newMemoryWith(clock.Now, time.Hour, MemoryOptions{MaxSessions: 3})
	defer m.Close()
	create := func(id string, ttl time.Duration) error {
		return m.Create(t.Context(), &Session{ID: id, CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}, ttl)
	}
	for i, ttl := range []time.Duration{2 * time.Hour, time.Hour, 3 * time.Hour} {
		if err := create(fmt.Sprint("s", i), ttl); err != nil {
			t.Fatal(err)
		}
	}
	err := create("s3", time.Hour)
	var fe *FullError
	if !errors.Is(err, ErrFull) || !errors.As(err, &fe) || fe.Max != 3 || fe.RetryAfter != time.Hour {
		t.Fatalf("4th create: %v (%+v), want ErrFull with Retry-After 1h", err, fe)
	}
	if _, err := m.Get(t.Context(), "s3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused create was stored: %v", err)
	}
	// A finished session still within its retention counts ...
	if _, err := m.Cancel(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	if err := create("s3", time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("create with a cancelled but retained session: %v", err)
	}
	// ... one past its ttl does not, though the janitor has not run.
	clock.Add(time.Hour)
	w := m.Watch(t.Context(), "s1")
	if err := create("s3", time.Hour); err != nil {
		t.Fatalf("create after s1 left: %v", err)
	}
	<-w // s1's watchers learn that it is gone
	if _, err := m.Get(t.Context(), "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("s1: %v", err)
	}
	if err := create("s4", time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("5th create: %v", err)
	}
}

func TestMemoryCapOptions(t *testing.T) {
	for _, tc := range []struct{ opt, want int }{{0, DefaultMaxSessions}, {-1, 0}, {7, 7}} {
		m := NewMemoryWith(MemoryOptions{MaxSessions: tc.opt})
		if m.max != tc.want {
			t.Errorf("MaxSessions %d: cap %d, want %d", tc.opt, m.max, tc.want)
		}
		m.Close()
	}
	uncapped := newMemoryWith(time.Now, time.Hour, MemoryOptions{MaxSessions: -1})
	defer uncapped.Close()
	for i := range 50 {
		if err := uncapped.Create(t.Context(), &Session{ID: fmt.Sprint(i), ExpiresAt: time.Now().Add(time.Minute)}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
}
