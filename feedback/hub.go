package feedback

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// EventKind names what happened to a question.
type EventKind string

// The four events of a question's life. Each happens once across every
// instance sharing a store, and is published on the instance that caused
// it (expiry: the instance that created the question, or whichever read it
// first past its deadline).
const (
	EventCreated   EventKind = "created"
	EventAnswered  EventKind = "answered"
	EventExpired   EventKind = "expired"
	EventCancelled EventKind = "cancelled"
)

// Event is one step of a question's life.
type Event struct {
	Kind    EventKind
	Session *Session
	// Link is the answer link; set on created only (it carries the
	// capability token, which exists nowhere else after Ask returns).
	Link string
}

// Hub is what one open store carries, shared by every configuration that
// uses that store (across reloads too): the store, the one event stream,
// and the expirer that records expiry when nobody reads a question.
type Hub struct {
	store store.Store
	// cached is store when it can answer reads from memory (the Redis
	// store), else nil.
	cached cachedStore
	subs   atomic.Pointer[[]*subscriber]
	mu     sync.Mutex // serialises Subscribe and its cancel
	exp    *expirer
	ann    announcer
}

type subscriber struct{ fn func(Event) }

// NewHub takes over st: its change hook feeds the event stream, and Close
// closes it.
func NewHub(st store.Store) *Hub {
	h := &Hub{store: st}
	h.cached, _ = st.(cachedStore)
	h.subs.Store(&[]*subscriber{})
	st.OnChange(h.changed)
	h.exp = newExpirer(h)
	return h
}

// Records is the store's KV: the records kept beside questions (sign-in
// sessions, OAuth grants, push subscriptions, tasks). Questions themselves
// are reached only through Service.
func (h *Hub) Records() store.KV { return h.store }

// cachedStore is a store with cheaper ways to read (store.Redis): Read
// gives what Get gives for a read that decides nothing; Peek answers from
// this process's memory and may hold an out-of-date pending state. Await
// and every outcome read the store with Get.
type cachedStore interface {
	Read(ctx context.Context, id string) (*store.Session, error)
	Peek(ctx context.Context, id string) (*store.Session, error)
}

// read is a read for showing, not for deciding.
func (h *Hub) read(ctx context.Context, id string) (*Session, error) {
	if h.cached != nil {
		return h.cached.Read(ctx, id)
	}
	return h.store.Get(ctx, id)
}

// peek is the first read of an answer or a withdrawal (see cachedStore).
func (h *Hub) peek(ctx context.Context, id string) (*Session, error) {
	if h.cached != nil {
		return h.cached.Peek(ctx, id)
	}
	return h.store.Get(ctx, id)
}

// Subscribe calls fn with every event of this instance until the returned
// function is called. fn runs on the path that caused the event, so it
// must not block: metrics, log lines and enqueueing webhooks are fine.
func (h *Hub) Subscribe(fn func(Event)) (cancel func()) {
	sub := &subscriber{fn: fn}
	h.mu.Lock()
	next := append(append([]*subscriber{}, *h.subs.Load()...), sub)
	h.subs.Store(&next)
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		cur := *h.subs.Load()
		next := make([]*subscriber, 0, len(cur))
		for _, s := range cur {
			if s != sub {
				next = append(next, s)
			}
		}
		h.subs.Store(&next)
	}
}

func (h *Hub) publish(e Event) {
	for _, s := range *h.subs.Load() {
		s.fn(e)
	}
}

func (h *Hub) created(s *Session, link string) {
	h.exp.add(s.ID, s.ExpiresAt)
	h.publish(Event{Kind: EventCreated, Session: s, Link: link})
	h.ann.enqueue(s.People())
}

// changed is the store's ChangeFunc.
func (h *Hub) changed(s *Session) {
	var k EventKind
	switch s.Status {
	case store.StatusSubmitted:
		k = EventAnswered
	case store.StatusExpired:
		k = EventExpired
	case store.StatusCancelled:
		k = EventCancelled
	default:
		return
	}
	h.publish(Event{Kind: k, Session: s})
	h.ann.enqueue(s.People())
}

// Close stops the expirer and closes the store; waits on it end.
func (h *Hub) Close() error {
	h.exp.stop()
	h.ann.stop()
	if err := h.store.Close(); err != nil {
		return fmt.Errorf("closing session store: %w", err)
	}
	return nil
}
