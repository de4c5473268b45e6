package store

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHubCoalescesAndUnregisters(t *testing.T) {
	h := newHub()
	ctx, cancel := context.WithCancel(t.Context())
	a := h.watch(ctx, "a")
	b := h.watch(t.Context(), "b")
	if got := h.ids(); !slices.Equal(sorted(got), []string{"a", "b"}) {
		t.Fatalf("ids = %v", got)
	}

	// Two notifies before the watcher looks leave one signal: it re-reads
	// the session anyway.
	h.notify("a")
	h.notify("a")
	if n := len(a); n != 1 {
		t.Fatalf("%d signals pending, want 1", n)
	}
	<-a
	if len(b) != 0 {
		t.Fatal("watcher of b signalled by a notify of a")
	}
	h.notifyAll()
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("after notifyAll: a has %d, b has %d signals", len(a), len(b))
	}

	cancel()
	for range a { // drains the signal, then ends when the channel closes
	}
	// remove deletes under the lock before it closes the channel.
	if got := h.ids(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("ids after cancel = %v", got)
	}
	h.notify("a") // no watcher left: must neither block nor panic

	h.close()
	<-b
	if _, ok := <-b; ok {
		t.Fatal("b still open after close")
	}
	if _, ok := <-h.watch(t.Context(), "c"); ok {
		t.Fatal("watch after close returned an open channel")
	}
	h.close()
	h.notifyAll()
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryJanitorDropsUnreadSessions(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	m := newMemory(clock.Now, 5*time.Millisecond)
	defer m.Close()
	s := &Session{ID: "x", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}
	if err := m.Create(t.Context(), s, time.Hour); err != nil {
		t.Fatal(err)
	}
	w := m.Watch(t.Context(), "x")

	clock.Add(time.Hour)
	// Nobody reads the session: only the janitor can drop it, and it wakes
	// the watcher when it does.
	select {
	case <-w:
	case <-time.After(10 * time.Second):
		t.Fatal("janitor did not drop the session")
	}
	m.mu.Lock()
	n := len(m.sessions)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sessions left after the sweep", n)
	}
}

func TestMemoryCloseIsIdempotent(t *testing.T) {
	m := NewMemory()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}
