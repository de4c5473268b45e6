package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// TestDeferredRedis: a store opened while Redis is down answers
// ErrUnavailable (not a failed start), opens Redis by itself once it
// answers, and then works, change hook included; watchers from before are
// released to subscribe again.
func TestDeferredRedis(t *testing.T) {
	rs := redistest.Start(t, "--appendfsync", "always")
	rs.Kill()
	open := func() (store.Store, error) {
		return store.NewRedis(store.RedisOptions{URL: rs.URL(), KeyPrefix: "deferred:"})
	}
	_, err := open()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("opening a Redis that is down: %v, want ErrUnavailable", err)
	}
	connected := make(chan struct{})
	failures := make(chan error, 100)
	st := store.OpenDeferred(open, err, func(err error) {
		if err == nil {
			close(connected)
			return
		}
		select {
		case failures <- err:
		default:
		}
	})
	defer st.Close()
	changes := make(chan *store.Session, 4)
	st.OnChange(func(s *store.Session) { changes <- s })

	sess := storetest.NewSession(time.Minute)
	if err := st.Create(t.Context(), sess, time.Hour); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("create while down: %v", err)
	}
	if _, err := st.Get(t.Context(), sess.ID); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("get while down: %v", err)
	}
	if err := st.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping while down: %v", err)
	}
	if err := st.Announce(t.Context(), "person:x"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("announce while down: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	early := st.Watch(ctx, sess.ID)
	<-failures // it kept trying

	rs.Restart(t)
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("never connected after Redis came back")
	}
	if _, ok := <-early; ok {
		t.Fatal("a watcher from before the connect was not released")
	}
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("ping after connect: %v", err)
	}
	if err := st.Create(t.Context(), sess, time.Hour); err != nil {
		t.Fatalf("create after connect: %v", err)
	}
	w := st.Watch(ctx, sess.ID)
	if _, err := st.Submit(t.Context(), sess.ID, store.Answer{FreeText: "yes"}); err != nil {
		t.Fatal(err)
	}
	storetest.WaitSignal(t, w, "watch after connect")
	inbox := st.Watch(ctx, "person:x")
	if err := st.Announce(t.Context(), "person:x"); err != nil {
		t.Fatalf("announce after connect: %v", err)
	}
	storetest.WaitSignal(t, inbox, "topic watcher after an announcement")
	if got := <-changes; got.Status != store.StatusSubmitted {
		t.Fatalf("change hook set before connect saw %s", got.Status)
	}
}
