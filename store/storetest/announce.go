package storetest

import (
	"errors"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// testAnnounce: Announce wakes the watchers of its topic on the same store
// (an inbox on the instance that made the change), a malformed topic is
// refused as a KV argument, and a closed store is unavailable.
func testAnnounce(t *testing.T, s store.Store) {
	topic := "person:" + strings.ToLower(NewID())
	w := s.Watch(t.Context(), topic)
	if err := s.Announce(t.Context(), topic); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	WaitSignal(t, w, "watcher of the announced topic")

	for _, bad := range []string{"", "has space", "ctl\x01", strings.Repeat("k", store.MaxKVKey+1)} {
		if err := s.Announce(t.Context(), bad); !errors.Is(err, store.ErrKVArgument) {
			t.Errorf("Announce(%q) = %v, want ErrKVArgument", bad, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, "Announce after Close", s.Announce(t.Context(), topic), store.ErrUnavailable)
}

// AnnounceAcross checks that an announcement made through one instance
// wakes a watcher of the topic on another instance of the same backend
// (for the memory store, pass the same store twice). subscribed, when not
// nil, waits until watcher's instance listens for topic (pub/sub drops what
// is published before); it gets the topic.
func AnnounceAcross(t *testing.T, announcer, watcher store.Store, subscribed func(topic string)) {
	t.Helper()
	topic := "person:" + strings.ToLower(NewID())
	w := watcher.Watch(t.Context(), topic)
	if subscribed != nil {
		subscribed(topic)
	}
	// A backend signals its watchers when their subscription is confirmed;
	// drop that signal so that only the announcement can satisfy the wait.
	drainSignals(w)
	if err := announcer.Announce(t.Context(), topic); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	WaitSignal(t, w, "watcher on the other instance")
}

func drainSignals(w <-chan struct{}) {
	for {
		select {
		case <-w:
		default:
			return
		}
	}
}
