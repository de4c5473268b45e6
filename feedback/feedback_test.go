package feedback

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// faultyStore wraps a real store. While `down` is set every Get fails as
// unavailable; while `lagging` is set a Get past the deadline still says
// pending, as a store whose clock is behind this machine's would.
type faultyStore struct {
	store.Store
	down, lagging atomic.Bool
	gets          atomic.Int64
	// reads gets a value after every Get, when a test listens.
	reads chan struct{}
}

func newFaulty() *faultyStore {
	return &faultyStore{Store: store.NewMemory(), reads: make(chan struct{}, 1)}
}

func (f *faultyStore) Get(ctx context.Context, id string) (*store.Session, error) {
	f.gets.Add(1)
	defer func() {
		select {
		case f.reads <- struct{}{}:
		default:
		}
	}()
	if f.down.Load() {
		return nil, store.ErrUnavailable
	}
	if f.lagging.Load() {
		// Read without the store deciding expiry: report what it held
		// before the deadline.
		s, err := f.Store.Get(ctx, id)
		if err == nil && s.Status == store.StatusExpired {
			s.Status = store.StatusPending
		}
		return s, err
	}
	return f.Store.Get(ctx, id)
}

func newTestService(t *testing.T, st store.Store) *Service {
	t.Helper()
	hub := NewHub(st)
	t.Cleanup(func() { _ = hub.Close() })
	return NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour})
}

// redisWithAdmin opens a Redis store with prefix on a fresh redis-server,
// and a client that reads Redis behind the store's back.
func redisWithAdmin(t *testing.T, prefix string) (*store.Redis, rueidis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	st, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return st, admin
}

func ask(t *testing.T, s *Service, timeout time.Duration) *Asked {
	t.Helper()
	a, err := s.Ask(t.Context(), Owner{Subject: "alice"}, &validate.CreateRequest{
		Message: "Ship it?", PredefinedOptions: []string{"yes", "no"}, Timeout: timeout, AllowFreeText: true,
	}, "https://fb.example", Style{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func token(t *testing.T, a *Asked) string {
	t.Helper()
	_, tok, ok := strings.Cut(a.Link, "#t=")
	if !ok {
		t.Fatalf("link %q has no token", a.Link)
	}
	return tok
}

func TestAwaitWakesOnAnswer(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	a := ask(t, s, time.Minute)
	done := awaitAsync(t, s, a.Session.ID)
	sess, err := s.GetByToken(t.Context(), a.Session.ID, token(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Answer(t.Context(), sess, &validate.SubmitRequest{SelectedOptions: []string{"yes"}}, Via{How: ViaLink}); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.Status != store.StatusSubmitted || got.Result.Via != ViaLink {
		t.Fatalf("await returned %+v", got)
	}
}

// A bounded wait ends pending when the caller's time is up before the deadline.
func TestAwaitCallerDeadline(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	a := ask(t, s, time.Minute)
	got, err := s.Await(t.Context(), a.Session.ID, time.Now().Add(50*time.Millisecond))
	if err != nil || got.Status != store.StatusPending {
		t.Fatalf("got %v, %v; want pending", got, err)
	}
}

// Clock skew: the store says pending past the deadline. A bounded wait
// keeps asking for MaxClockSkew and then returns pending; once the store
// agrees, an unbounded wait returns expired.
func TestAwaitClockSkew(t *testing.T) {
	fs := newFaulty()
	s := newTestService(t, fs)
	a := ask(t, s, time.Second)
	fs.lagging.Store(true)
	start := time.Now()
	got, err := s.Await(t.Context(), a.Session.ID, a.Session.ExpiresAt)
	if err != nil || got.Status != store.StatusPending {
		t.Fatalf("got %v, %v; want pending after the skew allowance", got, err)
	}
	if waited := time.Since(start); waited < MaxClockSkew {
		t.Fatalf("gave the store's clock %v, want at least %v", waited, MaxClockSkew)
	}
	// Rechecks are bounded: 250 ms doubling, so a handful, not a busy loop
	// (the expirer waits out the same deadline beside us: twice a handful).
	if n := fs.gets.Load(); n > 2*8 {
		t.Fatalf("%d reads during the skew allowance; the recheck should back off", n)
	}

	// Unbounded: the store's clock catches up while we wait.
	done := awaitAsync(t, s, a.Session.ID)
	drain(fs.reads)
	<-fs.reads // the waiter has read (pending) at least once
	fs.lagging.Store(false)
	if got := <-done; got.Status != store.StatusExpired {
		t.Fatalf("got %s, want expired once the store agrees", got.Status)
	}
}

// A store that is down: a bounded wait returns the store's error at its
// end; an unbounded one rides it out and sees the answer afterwards.
func TestAwaitStoreDown(t *testing.T) {
	fs := newFaulty()
	s := newTestService(t, fs)
	a := ask(t, s, time.Minute)
	fs.down.Store(true)
	got, err := s.Await(t.Context(), a.Session.ID, time.Now().Add(100*time.Millisecond))
	if !errors.Is(err, store.ErrUnavailable) || got != nil {
		t.Fatalf("got %v, %v; want store.ErrUnavailable", got, err)
	}

	done := awaitAsync(t, s, a.Session.ID)
	drain(fs.reads)
	<-fs.reads // the waiter has met the outage
	// Answer behind the outage (straight to the store), then bring it back.
	if _, err := fs.Store.Submit(t.Context(), a.Session.ID, store.Answer{FreeText: "yes"}); err != nil {
		t.Fatal(err)
	}
	fs.down.Store(false)
	if got := <-done; got.Status != store.StatusSubmitted {
		t.Fatalf("got %s, want submitted after the store came back", got.Status)
	}
}

// A store closed under a wait ends it with ErrStoreClosed.
func TestAwaitStoreClosed(t *testing.T) {
	st := store.NewMemory()
	hub := NewHub(st)
	s := NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour})
	a := ask(t, s, time.Minute)
	errc := make(chan error)
	go func() {
		_, err := s.Await(t.Context(), a.Session.ID, time.Time{})
		errc <- err
	}()
	// Closing at any point of the wait must end it: before its first read
	// (the read fails) or during it (the change feed closes).
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrStoreClosed) && !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("got %v, want ErrStoreClosed", err)
	}
}

// awaitAsync runs an unbounded Await in the background; its session
// arrives on the channel.
func awaitAsync(t *testing.T, s *Service, id string) <-chan *Session {
	done := make(chan *Session, 1)
	go func() {
		got, err := s.Await(t.Context(), id, time.Time{})
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	return done
}

func drain(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}

func TestEventsAndWithdraw(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	var mu sync.Mutex
	var kinds []EventKind
	cancel := s.Hub().Subscribe(func(e Event) {
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	})
	defer cancel()
	a := ask(t, s, time.Minute)
	if _, err := s.Withdraw(t.Context(), Owner{Subject: "mallory"}, a.Session.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("someone else's withdraw: %v", err)
	}
	for range 2 {
		if got, err := s.Withdraw(t.Context(), Owner{Subject: "alice"}, a.Session.ID); err != nil || got.Status != store.StatusCancelled {
			t.Fatalf("withdraw: %v, %v", got, err)
		}
	}
	b := ask(t, s, time.Minute)
	sess, _ := s.Get(t.Context(), Owner{Subject: "alice"}, b.Session.ID)
	if _, err := s.Answer(t.Context(), sess, &validate.SubmitRequest{FreeText: "ok"}, Via{How: ViaOwner, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Withdraw(t.Context(), Owner{Subject: "alice"}, b.Session.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("withdraw after answer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []EventKind{EventCreated, EventCancelled, EventCreated, EventAnswered}
	if strings.Join(kindStrings(kinds), ",") != strings.Join(kindStrings(want), ",") {
		t.Fatalf("events %v, want %v", kinds, want)
	}
}

func kindStrings(k []EventKind) []string {
	out := make([]string, len(k))
	for i, v := range k {
		out[i] = string(v)
	}
	return out
}

func TestLinkStyle(t *testing.T) {
	if got := Link("https://x.example/", "id", "TOK", Style{Lang: "zh", Theme: "dark"}); got != "https://x.example/feedback/id?lang=zh&theme=dark#t=TOK" {
		t.Fatalf("link %q", got)
	}
	if err := CheckStyle(Style{Theme: "neon"}); err == nil {
		t.Fatal("theme neon accepted")
	}
}

// Expiry is recorded (and its event published) by the creating instance
// even when nobody reads the question.
func TestExpiryRecordedWithoutReaders(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	got := make(chan Event, 4)
	defer s.Hub().Subscribe(func(e Event) {
		if e.Kind == EventExpired {
			got <- e
		}
	})()
	a := ask(t, s, time.Second)
	if e := <-got; e.Session.ID != a.Session.ID {
		t.Fatalf("expired event for %s, want %s", e.Session.ID, a.Session.ID)
	}
}
