package store

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"
)

// subscriber keeps the channels of every watched question subscribed on
// one dedicated connection, for a single Redis (standalone or behind
// Sentinel). A rueidis Receive blocks its caller for as long as the
// subscription lasts, so following each question with its own Receive
// costs a goroutine per watched question (6–8 KB of stack and 3 KB of
// heap): with thousands of waiting agents and open answer pages that was
// a third of what each one cost. Here one goroutine sends the SSUBSCRIBEs
// and SUNSUBSCRIBEs, in the order the hub asked for them, and rueidis'
// pub/sub hooks deliver the announcements.
//
// A Redis Cluster keeps the Receive per question (follow): a dedicated
// rueidis connection serves one slot only, and each question has its own.
//
// As with follow, pub/sub is a hint: every subscribe confirmation, the
// first and those after a reconnect, signals the question's watchers, who
// re-read it, which covers anything announced while the subscription was
// not there.
type subscriber struct {
	r *Redis

	mu   sync.Mutex
	want map[string]bool // channels with a local watcher
	// todo are the channels whose wanted state changed since the loop
	// last looked, in the order they changed.
	todo []string
	kick chan struct{} // wakes the loop; buffered, never blocks
}

func newSubscriber(r *Redis) *subscriber {
	return &subscriber{r: r, want: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// set records that channel is wanted (or no longer); the loop applies it.
// It never blocks: the hub calls it under its lock.
func (s *subscriber) set(channel string, on bool) {
	s.mu.Lock()
	if on {
		s.want[channel] = true
	} else {
		delete(s.want, channel)
	}
	s.todo = append(s.todo, channel)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run keeps a dedicated connection with every wanted channel subscribed
// until ctx ends, connecting again (with backoff) when it is lost.
func (s *subscriber) run(ctx context.Context) {
	backoff := subscribeMinBackoff
	for ctx.Err() == nil {
		if s.session(ctx) {
			backoff = subscribeMinBackoff
		}
		backoff = pause(ctx, backoff)
	}
}

// session is one connection's life: subscribe what is wanted, then follow
// the hub's changes until the connection fails or ctx ends. It reports
// whether a subscription was confirmed on it (then the next connection is
// tried without backing off further).
func (s *subscriber) session(ctx context.Context) (confirmed bool) {
	dc, release := s.r.client.Dedicate()
	defer release()
	var ok atomic.Bool
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		// Both run on the connection's reader goroutine: hub calls never
		// block.
		OnMessage: func(m rueidis.PubSubMessage) {
			// Forget the cached state before waking watchers, so that no
			// reader woken by this message can be served the old state.
			id := s.r.idOf(m.Channel)
			s.r.received.Add(1)
			s.r.cache.invalidate(id)
			s.r.hub.notify(id)
		},
		OnSubscription: func(sub rueidis.PubSubSubscription) {
			if sub.Kind == "ssubscribe" {
				ok.Store(true)
				id := s.r.idOf(sub.Channel)
				s.r.subscribed.Add(1) // counted before the signal it explains
				s.r.cache.invalidate(id)
				s.r.hub.notify(id)
			}
		},
	})
	// Everything wanted now is (re)subscribed; what changes from here on
	// comes through todo.
	s.mu.Lock()
	s.todo = s.todo[:0]
	first := make([]string, 0, len(s.want))
	for ch := range s.want {
		first = append(first, ch)
	}
	s.mu.Unlock()
	on := map[string]bool{} // subscribed on this connection
	if !s.apply(ctx, dc, on, first) {
		return ok.Load()
	}
	for {
		select {
		case <-ctx.Done():
			return ok.Load()
		case <-lost:
			return ok.Load()
		case <-s.kick:
		}
		s.mu.Lock()
		changed := s.todo
		s.todo = nil
		s.mu.Unlock()
		if !s.apply(ctx, dc, on, changed) {
			return ok.Load()
		}
	}
}

// apply brings the channels named in changed to their wanted state on dc,
// in one round trip; false when the connection failed.
func (s *subscriber) apply(ctx context.Context, dc rueidis.DedicatedClient, on map[string]bool, changed []string) bool {
	var cmds rueidis.Commands
	for _, ch := range changed {
		s.mu.Lock()
		want := s.want[ch]
		s.mu.Unlock()
		switch {
		case want && !on[ch]:
			cmds = append(cmds, dc.B().Ssubscribe().Channel(ch).Build())
			on[ch] = true
		case !want && on[ch]:
			// Receive-less subscriptions end only when told to.
			cmds = append(cmds, dc.B().Sunsubscribe().Channel(ch).Build())
			delete(on, ch)
		}
	}
	if len(cmds) == 0 {
		return true
	}
	octx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	for _, res := range dc.DoMulti(octx, cmds...) {
		if err := res.Error(); err != nil {
			return false
		}
	}
	return true
}

// idOf is the question (or topic) id of a channel made by channel.
func (r *Redis) idOf(channel string) string {
	id := strings.TrimPrefix(channel, r.prefix+"ev:{")
	return strings.TrimSuffix(id, "}")
}
