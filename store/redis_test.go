package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// waitBound bounds waits for things that should happen promptly; only a
// broken store reaches it.
const waitBound = 10 * time.Second

func newRedis(t testing.TB, srv *redistest.Server, prefix string) *store.Redis {
	t.Helper()
	r, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), KeyPrefix: prefix})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// uniquePrefix keeps stores of different subtests on one server apart.
func uniquePrefix() string { return "t" + strings.ToLower(storetest.NewID()[:10]) + ":" }

// adminClient talks to the server behind the store's back.
func adminClient(t testing.TB, srv *redistest.Server) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestRedisContract(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newRedis(t, srv, uniquePrefix())
	})
}

func TestRedisContractSharedClient(t *testing.T) {
	// A store given its client must behave the same and leave it open.
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	storetest.Run(t, func(t *testing.T) store.Store {
		r, err := store.NewRedis(store.RedisOptions{Client: admin, KeyPrefix: uniquePrefix()})
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	})
	if err := admin.Do(t.Context(), admin.B().Ping().Build()).Error(); err != nil {
		t.Fatalf("shared client after the stores closed: %v", err)
	}
}

func TestRedisKeysAndTTLs(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	r := newRedis(t, srv, "") // the default prefix
	ctx := t.Context()

	create := func(timeout time.Duration) string {
		s := storetest.NewSession(timeout)
		if err := r.Create(ctx, s, time.Hour); err != nil {
			t.Fatalf("Create: %v", err)
		}
		return s.ID
	}
	pending := create(time.Minute)
	submitted := create(time.Minute)
	if _, err := r.Submit(ctx, submitted, store.Answer{FreeText: "x", Nonce: "n"}); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	cancelled := create(time.Minute)
	if _, err := r.Cancel(ctx, cancelled); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	expiredByGet := create(-time.Second)
	if _, err := r.Get(ctx, expiredByGet); err != nil {
		t.Fatalf("Get: %v", err)
	}
	expiredBySubmit := create(-time.Second)
	if _, err := r.Submit(ctx, expiredBySubmit, store.Answer{FreeText: "x"}); !errors.Is(err, store.ErrGone) {
		t.Fatalf("late Submit: %v", err)
	}
	expiredByCancel := create(-time.Second)
	if _, err := r.Cancel(ctx, expiredByCancel); !errors.Is(err, store.ErrGone) {
		t.Fatalf("late Cancel: %v", err)
	}

	// Exactly one key per session, named as documented, and nothing else.
	var want []string
	for _, id := range []string{pending, submitted, cancelled, expiredByGet, expiredBySubmit, expiredByCancel} {
		want = append(want, store.DefaultKeyPrefix+"s:{"+id+"}")
	}
	keys, err := admin.Do(ctx, admin.B().Keys().Pattern("*").Build()).AsStrSlice()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %q, want %q", keys, want)
	}
	for _, k := range keys {
		pttl, err := admin.Do(ctx, admin.B().Pttl().Key(k).Build()).AsInt64()
		if err != nil {
			t.Fatalf("PTTL %s: %v", k, err)
		}
		// -1 would be a key that lives forever; the ttl is never extended.
		if pttl <= 0 || pttl > time.Hour.Milliseconds() {
			t.Errorf("PTTL %s = %d ms, want in (0, 1h]", k, pttl)
		}
	}
}

func TestRedisScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	r := newRedis(t, srv, uniquePrefix())
	ctx := t.Context()
	s := storetest.NewSession(time.Minute)
	if err := r.Create(ctx, s, time.Hour); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := r.Get(ctx, s.ID); err != nil { // the scripts are now cached
		t.Fatalf("Get: %v", err)
	}
	// As after a Redis restart or failover: EVALSHA gets NOSCRIPT.
	if err := admin.Do(ctx, admin.B().ScriptFlush().Build()).Error(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	got, err := r.Submit(ctx, s.ID, store.Answer{FreeText: "after flush", Nonce: "n"})
	if err != nil {
		t.Fatalf("Submit after SCRIPT FLUSH: %v", err)
	}
	if got.Status != store.StatusSubmitted || got.Result.FreeText != "after flush" {
		t.Fatalf("Submit after SCRIPT FLUSH returned %+v", got)
	}
	if err := admin.Do(ctx, admin.B().ScriptFlush().Build()).Error(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	if _, err := r.Get(ctx, s.ID); err != nil {
		t.Fatalf("Get after SCRIPT FLUSH: %v", err)
	}
}

func TestRedisCrossInstanceWatch(t *testing.T) {
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	a, b := newRedis(t, srv, prefix), newRedis(t, srv, prefix)
	s := storetest.NewSession(time.Minute)
	if err := a.Create(t.Context(), s, time.Hour); err != nil {
		t.Fatalf("Create: %v", err)
	}
	w := a.Watch(t.Context(), s.ID)
	if _, err := b.Submit(t.Context(), s.ID, store.Answer{FreeText: "from b"}); err != nil {
		t.Fatalf("Submit on b: %v", err)
	}
	waitStatus(t, a, w, s.ID, store.StatusSubmitted)
}

// waitStatus follows the watch protocol: on every signal, re-read. Reads
// that fail because a connection is being replaced are retried.
func waitStatus(t *testing.T, r store.Store, w <-chan struct{}, id string, want store.Status) *store.Session {
	t.Helper()
	timer := time.NewTimer(waitBound)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w:
			if !ok {
				t.Fatalf("watch of %s closed while waiting for %s", id, want)
			}
		case <-timer.C:
			t.Fatalf("no signal for %s reaching %s within %v", id, want, waitBound)
		}
		got, err := r.Get(t.Context(), id)
		switch {
		case errors.Is(err, store.ErrUnavailable):
		case err != nil:
			t.Fatalf("Get(%s): %v", id, err)
		case got.Status == want:
			return got
		}
	}
}

// drain empties a watch channel of signals already delivered.
func drain(w <-chan struct{}) {
	for {
		select {
		case <-w:
		default:
			return
		}
	}
}

// waitSubscribers polls until n clients are subscribed to a question's
// sharded channel.
func waitSubscribers(t *testing.T, admin rueidis.Client, channel string, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitBound)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		m, err := admin.Do(ctx, admin.B().PubsubShardnumsub().Channel(channel).Build()).AsIntMap()
		if err == nil && m[channel] == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s has %d subscribers (err %v), want %d", channel, m[channel], err, n)
		case <-tick.C:
		}
	}
}

func waitSubscribeCount(t testing.TB, r *store.Redis, n int64) {
	t.Helper()
	timer := time.NewTimer(waitBound)
	defer timer.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for store.SubscribeCount(r) < n {
		select {
		case <-timer.C:
			t.Fatalf("%d subscribe confirmations after %v, want %d", store.SubscribeCount(r), waitBound, n)
		case <-tick.C:
		}
	}
}

func killPubSubClients(t *testing.T, admin rueidis.Client) {
	t.Helper()
	n, err := admin.Do(t.Context(), admin.B().ClientKill().TypePubsub().Build()).AsInt64()
	if err != nil {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
	}
	if n == 0 {
		t.Fatal("CLIENT KILL TYPE pubsub killed no client")
	}
}

func TestRedisResubscribe(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	prefix := uniquePrefix()
	watching, writer := newRedis(t, srv, prefix), newRedis(t, srv, prefix)
	ctx := t.Context()
	s := storetest.NewSession(time.Minute)
	if err := writer.Create(ctx, s, time.Hour); err != nil {
		t.Fatalf("Create: %v", err)
	}
	channel := prefix + "ev:{" + s.ID + "}"
	w := watching.Watch(ctx, s.ID)
	// The first confirmation of the question's subscription signals its
	// watcher too; wait for it, so that the signal awaited below can only
	// come from a resubscribe. Only the watching instance subscribes.
	waitSubscribeCount(t, watching, 1)
	storetest.WaitSignal(t, w, "watcher on the first subscribe confirmation")
	waitSubscribers(t, admin, channel, 1)

	// Nothing changes, so the only reason for a signal is the resubscribe:
	// the store cannot know what it missed and makes every watcher re-read.
	killPubSubClients(t, admin)
	storetest.WaitSignal(t, w, "watcher after the subscriber connection was killed")
	if n := store.SubscribeCount(watching); n < 2 {
		t.Fatalf("%d subscribe confirmations after the kill, want 2 or more", n)
	}

	// Now a change made while the subscription is (probably) down. The
	// writer's connection is killed too, so its submit may fail; the nonce
	// makes retrying it safe.
	waitSubscribers(t, admin, channel, 1)
	drain(w)
	killPubSubClients(t, admin)
	submitRetrying(t, writer, s.ID, store.Answer{FreeText: "in the gap", Nonce: "gap"})
	got := waitStatus(t, watching, w, s.ID, store.StatusSubmitted)
	if got.Result.FreeText != "in the gap" {
		t.Fatalf("watcher read %+v", got.Result)
	}
}

// submitRetrying retries a Submit that fails with ErrUnavailable, as while
// Redis restarts, and fails t on any other error.
func submitRetrying(t *testing.T, r store.Store, id string, a store.Answer) *store.Session {
	t.Helper()
	return retrying(t, "Submit("+id+")", func(ctx context.Context) (*store.Session, error) { return r.Submit(ctx, id, a) })
}

// getRetrying is submitRetrying for Get.
func getRetrying(t *testing.T, r store.Store, id string) *store.Session {
	t.Helper()
	return retrying(t, "Get("+id+")", func(ctx context.Context) (*store.Session, error) { return r.Get(ctx, id) })
}

// retrying repeats op while it fails with ErrUnavailable, for at most
// waitBound, and fails t on any other error.
func retrying(t *testing.T, what string, op func(context.Context) (*store.Session, error)) *store.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitBound)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := op(ctx)
		if err == nil {
			return got
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s still failing after %v: %v", what, waitBound, err)
		case <-tick.C:
		}
	}
}

func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	r, other := newRedis(t, srv, prefix), newRedis(t, srv, prefix)
	ctx := t.Context()

	answered := storetest.NewSession(time.Hour)
	open := storetest.NewSession(time.Hour)
	for _, s := range []*store.Session{answered, open} {
		if err := r.Create(ctx, s, 2*time.Hour); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	acked, err := r.Submit(ctx, answered.ID, store.Answer{SelectedOptions: []string{"yes"}, Nonce: "acked"})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}

	srv.Kill()
	// Every call fails with ErrUnavailable, and does so within its deadline
	// rather than hanging (a hang would trip the test timeout).
	calls := map[string]func(context.Context) error{
		"Get": func(ctx context.Context) error { _, err := r.Get(ctx, answered.ID); return err },
		"Submit": func(ctx context.Context) error {
			_, err := r.Submit(ctx, open.ID, store.Answer{FreeText: "x"})
			return err
		},
		"Submit with nonce": func(ctx context.Context) error {
			_, err := r.Submit(ctx, open.ID, store.Answer{FreeText: "x", Nonce: "n"})
			return err
		},
		"Cancel": func(ctx context.Context) error { _, err := r.Cancel(ctx, open.ID); return err },
		"Create": func(ctx context.Context) error {
			return r.Create(ctx, storetest.NewSession(time.Minute), time.Hour)
		},
		"Ping": func(ctx context.Context) error { return r.Ping(ctx) },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		err := call(ctx)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with Redis down: %v, want ErrUnavailable", name, err)
		}
	}
	// A call without a deadline of its own is bounded too.
	if err := r.Ping(context.Background()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping without deadline, Redis down: %v", err)
	}

	w := r.Watch(ctx, open.ID)
	srv.Restart(t)

	// The acknowledged submit survived kill -9 (AOF), and nothing else ran.
	got := getRetrying(t, r, answered.ID)
	storetest.SameSession(t, "acknowledged submit after kill -9", got, acked)
	if st, err := r.Get(ctx, open.ID); err != nil || st.Status != store.StatusPending {
		t.Fatalf("open session after restart: %+v, %v", st, err)
	}

	// The subscription came back: a change on another instance reaches the
	// watcher.
	drain(w)
	submitRetrying(t, other, open.ID, store.Answer{FreeText: "after restart", Nonce: "n2"})
	waitStatus(t, r, w, open.ID, store.StatusSubmitted)
}

func TestNewRedisErrors(t *testing.T) {
	if _, err := store.NewRedis(store.RedisOptions{}); err == nil {
		t.Error("NewRedis without URL or client succeeded")
	}
	for _, u := range []string{"http://user:secret@localhost", "redis://user:secret@localhost:port"} {
		if _, err := store.NewRedis(store.RedisOptions{URL: u}); err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("NewRedis(%q): %v", u, err)
		}
	}
	// A port nobody listens on: the server was started and killed.
	srv := redistest.Start(t)
	srv.Kill()
	if _, err := store.NewRedis(store.RedisOptions{URL: srv.URL()}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("NewRedis with Redis down: %v, want ErrUnavailable", err)
	}
}

// Read answers what Get answers, for every state, from a plain HMGET; a
// pending question within ReadMargin of its deadline is read with the
// script, which records the expiry (and announces it).
func TestRedisReadIsGet(t *testing.T) {
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	r := newRedis(t, srv, prefix)
	other := newRedis(t, srv, prefix) // reads what r wrote, knowing nothing of it
	ctx := t.Context()
	var changes atomic.Int64
	other.OnChange(func(*store.Session) { changes.Add(1) })

	pending := storetest.NewSession(time.Minute)
	answered := storetest.NewSession(time.Minute)
	withdrawn := storetest.NewSession(time.Minute)
	due := storetest.NewSession(store.ReadMargin / 2) // within the margin
	for _, s := range []*store.Session{pending, answered, withdrawn, due} {
		if err := r.Create(ctx, s, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Submit(ctx, answered.ID, store.Answer{SelectedOptions: []string{"yes"}, FreeText: "ok", Nonce: "n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Cancel(ctx, withdrawn.ID); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*store.Redis{r, other} {
		for _, id := range []string{pending.ID, answered.ID, withdrawn.ID} {
			got, err := st.Read(ctx, id)
			if err != nil {
				t.Fatalf("Read(%s): %v", id, err)
			}
			storetest.SameSession(t, "Read", got, mustGetSession(t, st, id))
		}
	}
	if _, err := other.Read(ctx, storetest.NewID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Read of an unknown id: %v, want ErrNotFound", err)
	}

	// Past the deadline: the script runs and records the expiry.
	timer := time.NewTimer(time.Until(due.ExpiresAt) + 10*time.Millisecond)
	<-timer.C
	got, err := other.Read(ctx, due.ID)
	if err != nil || got.Status != store.StatusExpired {
		t.Fatalf("Read past the deadline: %+v %v, want expired", got, err)
	}
	if changes.Load() != 1 {
		t.Fatalf("%d changes announced, want the expiry", changes.Load())
	}

	// Read asks Redis every time: with Redis gone it fails.
	srv.Kill()
	if _, err := r.Read(ctx, pending.ID); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Read with Redis down: %v, want ErrUnavailable", err)
	}
}

func mustGetSession(t *testing.T, r store.Store, id string) *store.Session {
	t.Helper()
	s, err := r.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return s
}

// What Create remembers of a question is exactly what a reader decodes
// from Redis, whatever the JSON round trip changes (HTML escaping, spacing
// in metadata, invalid UTF-8, empty and nil lists), and neither the creator
// nor a reader of a copy (Read) can change it afterwards. (What Peek
// returns is read-only by contract.)
func TestRedisRememberedEqualsStored(t *testing.T) {
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	r := newRedis(t, srv, prefix)
	fresh := newRedis(t, srv, prefix)
	ctx := t.Context()
	variants := []func(s *store.Session){
		func(*store.Session) {},
		func(s *store.Session) { s.Metadata = []byte(`{ "a" : "<b>&</b>", "n": [1, 2] }`) },
		func(s *store.Session) { s.Metadata = []byte("{\"line\":\"\u2028\"}") },
		func(s *store.Session) { s.Metadata = []byte{} },
		func(s *store.Session) { s.Metadata = nil; s.PredefinedOptions = nil },
		func(s *store.Session) { s.PredefinedOptions = []string{} },
		func(s *store.Session) { s.Message = "bad \xff utf-8 <&>"; s.PredefinedOptions = []string{"x\xfe"} },
		func(s *store.Session) { s.Owner.Subject = "sub \xc3" },
		func(s *store.Session) { s.TokenHash = nil },
		func(s *store.Session) { s.TokenHash = []byte{} },
	}
	for i, change := range variants {
		s := storetest.NewSession(time.Minute)
		change(s)
		if err := r.Create(ctx, s, time.Hour); err != nil {
			t.Fatalf("variant %d: Create: %v", i, err)
		}
		remembered, err := r.Peek(ctx, s.ID) // from memory: nothing was read
		if err != nil {
			t.Fatalf("variant %d: Peek: %v", i, err)
		}
		storetest.SameSession(t, "remembered after Create", remembered, mustGetSession(t, fresh, s.ID))
		// Neither the creator's later changes nor a reader's reach it.
		s.Message = "changed"
		if len(s.PredefinedOptions) > 0 {
			s.PredefinedOptions[0] = "changed"
		}
		if len(s.TokenHash) > 0 {
			s.TokenHash[0] ^= 0xff
		}
		read, err := r.Read(ctx, s.ID)
		if err != nil {
			t.Fatalf("variant %d: Read: %v", i, err)
		}
		if len(read.PredefinedOptions) > 0 {
			read.PredefinedOptions[0] = "changed"
		}
		if len(read.TokenHash) > 0 {
			read.TokenHash[0] ^= 0xff
		}
		if len(read.Metadata) > 0 {
			read.Metadata[0] = 'X'
		}
		again, _ := r.Peek(ctx, s.ID)
		storetest.SameSession(t, "remembered after changes to copies", again, mustGetSession(t, fresh, s.ID))
	}
}

// TestRedisAnnounceAcross: an announcement made through one instance
// reaches a watcher of the topic on another, through the topic's sharded
// channel.
func TestRedisAnnounceAcross(t *testing.T) {
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	a, b := newRedis(t, srv, prefix), newRedis(t, srv, prefix)
	storetest.AnnounceAcross(t, a, b, func(string) { waitSubscribeCount(t, b, 1) })
}

// TestRedisSubscriberChurn: watchers of many questions come and go faster
// than the subscriber connection applies them; in the end exactly the
// questions still watched are subscribed (once each, on one connection),
// the others are not, and a change of a watched one reaches its watcher.
func TestRedisSubscriberChurn(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	prefix := uniquePrefix()
	watching, writer := newRedis(t, srv, prefix), newRedis(t, srv, prefix)
	ctx := t.Context()
	ids := make([]string, 20)
	for i := range ids {
		s := storetest.NewSession(time.Minute)
		if err := writer.Create(ctx, s, time.Hour); err != nil {
			t.Fatalf("Create: %v", err)
		}
		ids[i] = s.ID
	}
	// Each question is watched and left 10 times; the even ones are
	// watched once more at the end and kept.
	for range 10 {
		for _, id := range ids {
			wctx, cancel := context.WithCancel(ctx)
			watching.Watch(wctx, id)
			cancel()
		}
	}
	kept := map[string]<-chan struct{}{}
	for i, id := range ids {
		if i%2 == 0 {
			kept[id] = watching.Watch(ctx, id)
		}
	}
	for i, id := range ids {
		want := int64(0)
		if i%2 == 0 {
			want = 1
		}
		waitSubscribers(t, admin, prefix+"ev:{"+id+"}", want)
	}
	id := ids[4]
	drain(kept[id])
	if _, err := writer.Submit(ctx, id, store.Answer{FreeText: "after the churn"}); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if got := waitStatus(t, watching, kept[id], id, store.StatusSubmitted); got.Result.FreeText != "after the churn" {
		t.Fatalf("watcher read %+v", got.Result)
	}
}
