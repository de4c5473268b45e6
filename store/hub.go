package store

import (
	"context"
	"sync"
)

// hub fans "session id may have changed" signals out to the watchers of this
// process. Both backends use it: the memory store signals it directly, the
// Redis store from its pub/sub subscriber (and directly for its own writes).
//
// Each watcher has a channel with a buffer of one and every send is
// non-blocking, so a slow watcher costs nothing and signals coalesce; the
// watcher re-reads the session anyway, so one pending signal says enough.
type hub struct {
	mu     sync.Mutex
	subs   map[string]map[*watcher]struct{}
	closed bool
	// onFirst and onLast, when set, are told (under mu, so in order, and
	// they must not call back into the hub) when an id gets its first
	// watcher and loses its last: the Redis store subscribes to a
	// question's channel only while someone here waits for it.
	onFirst, onLast func(id string)
}

type watcher struct {
	ch chan struct{}
	// stop deregisters the context.AfterFunc, so that close does not leave a
	// callback behind on a long-lived ctx.
	stop func() bool
}

func newHub() *hub {
	return &hub{subs: make(map[string]map[*watcher]struct{})}
}

// watch registers a watcher of id until ctx ends, then closes its channel.
// After close, it returns an already closed channel so that callers wake up
// and find the store unavailable instead of waiting forever.
func (h *hub) watch(ctx context.Context, id string) <-chan struct{} {
	w := &watcher{ch: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(w.ch)
		return w.ch
	}
	set := h.subs[id]
	if set == nil {
		set = make(map[*watcher]struct{})
		h.subs[id] = set
		if h.onFirst != nil {
			h.onFirst(id)
		}
	}
	set[w] = struct{}{}
	// Registered under the lock: if ctx is already done the callback runs in
	// its own goroutine and waits for the lock, so it always finds w in the map.
	w.stop = context.AfterFunc(ctx, func() { h.remove(id, w) })
	return w.ch
}

// remove drops w and closes its channel, unless close got there first.
func (h *hub) remove(id string, w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[id]
	if _, ok := set[w]; !ok {
		return
	}
	delete(set, w)
	if len(set) == 0 {
		delete(h.subs, id)
		if h.onLast != nil {
			h.onLast(id)
		}
	}
	close(w.ch)
}

// notify signals every watcher of id without blocking.
func (h *hub) notify(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.subs[id] {
		signal(w.ch)
	}
}

// notifyAll signals every watcher. The Redis store calls it after its
// subscription is (re)established, because messages published while it was
// disconnected are lost for good.
func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.subs {
		for w := range set {
			signal(w.ch)
		}
	}
}

// ids lists the session ids that have at least one watcher.
func (h *hub) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.subs))
	for id := range h.subs {
		ids = append(ids, id)
	}
	return ids
}

// close closes every watcher channel and makes later watches return a closed
// channel. It is idempotent.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for id, set := range h.subs {
		for w := range set {
			w.stop()
			close(w.ch)
		}
		delete(h.subs, id)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
