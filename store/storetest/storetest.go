// Package storetest is the contract every store.Store backend must meet,
// written once and run against each backend by its own tests.
package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

const (
	// longTTL keeps keys for far longer than any test runs.
	longTTL = time.Hour
	// shortTTL is the retention of the ttl test: long enough that the
	// session is certainly still there right after Create, even on a slow
	// machine under -race.
	shortTTL = 1500 * time.Millisecond
	// waitBound is how long a test waits for something that should happen
	// at once; only reached when the backend is broken.
	waitBound = 10 * time.Second
)

// Run runs the contract against stores made by newStore. Each subtest calls
// newStore once and expects a fresh, empty store that it may Close; newStore
// must arrange for the store to be closed when t ends (Close is idempotent).
//
// Backends may keep times to the millisecond, so every time the suite
// stores is whole milliseconds.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("CreateGetRoundTrip", func(t *testing.T) { testRoundTrip(t, newStore(t)) })
	t.Run("CreateDeepCopies", func(t *testing.T) { testDeepCopy(t, newStore(t)) })
	t.Run("DuplicateID", func(t *testing.T) { testDuplicate(t, newStore(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newStore(t)) })
	t.Run("SubmitOnce", func(t *testing.T) { testSubmitOnce(t, newStore(t)) })
	t.Run("FreeTextAnswerListsNoOptions", func(t *testing.T) { testFreeTextOnly(t, newStore(t)) })
	t.Run("SubmitSameNonceRetry", func(t *testing.T) { testSameNonce(t, newStore(t)) })
	t.Run("SubmitDifferentNonce", func(t *testing.T) { testDifferentNonce(t, newStore(t)) })
	t.Run("SubmitAfterDeadline", func(t *testing.T) { testSubmitAfterDeadline(t, newStore(t)) })
	t.Run("GetAfterDeadline", func(t *testing.T) { testGetAfterDeadline(t, newStore(t)) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, newStore(t)) })
	t.Run("WatchSubmit", func(t *testing.T) { testWatchSubmit(t, newStore(t)) })
	t.Run("WatchCancel", func(t *testing.T) { testWatchCancel(t, newStore(t)) })
	t.Run("WatchClosesWithContext", func(t *testing.T) { testWatchCtx(t, newStore(t)) })
	t.Run("WatchExpiry", func(t *testing.T) { testWatchExpiry(t, newStore(t)) })
	t.Run("TTL", func(t *testing.T) { testTTL(t, newStore(t)) })
	t.Run("ConcurrentSubmits", func(t *testing.T) { testConcurrentSubmits(t, newStore(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, newStore(t)) })
	t.Run("Announce", func(t *testing.T) { testAnnounce(t, newStore(t)) })
	t.Run("FormRoundTrip", func(t *testing.T) { testFormRoundTrip(t, newStore(t)) })
	t.Run("TimeoutChoose", func(t *testing.T) { testTimeoutChoose(t, newStore(t)) })
	runKV(t, newStore)
}

// NewID returns a random session id.
func NewID() string { return rand.Text() }

// NewSession returns a pending session with every field set, due in
// timeout from now (negative: already past its deadline).
func NewSession(timeout time.Duration) *store.Session {
	now := time.Now().UTC().Truncate(time.Millisecond)
	created := now
	if timeout < 0 {
		// Past its deadline, yet created before it, as a real session would be.
		created = now.Add(2 * timeout)
	}
	return &store.Session{
		ID:                NewID(),
		Owner:             store.Owner{Issuer: "https://issuer.example", Subject: "agent-1"},
		Message:           "Deploy to production? ünïcödé ✓",
		PredefinedOptions: []string{"yes", "no", "later"},
		MultiSelect:       true,
		AllowFreeText:     true,
		Metadata:          []byte(`{"repo":"x/y","pr":42}`),
		CreatedAt:         created,
		ExpiresAt:         now.Add(timeout),
		UpdatedAt:         created,
		Status:            store.StatusPending,
		TokenHash:         store.HashToken("capability-" + rand.Text()),
	}
}

func mustCreate(t *testing.T, s store.Store, sess *store.Session, ttl time.Duration) {
	t.Helper()
	if err := s.Create(t.Context(), sess, ttl); err != nil {
		t.Fatalf("Create(%s): %v", sess.ID, err)
	}
}

func mustGet(t *testing.T, s store.Store, id string) *store.Session {
	t.Helper()
	got, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

// normalize makes equal instants compare equal with reflect.DeepEqual:
// backends may return another location and no monotonic reading.
func normalize(s *store.Session) *store.Session {
	if s == nil {
		return nil
	}
	c := *s
	c.CreatedAt = c.CreatedAt.UTC()
	c.ExpiresAt = c.ExpiresAt.UTC()
	c.UpdatedAt = c.UpdatedAt.UTC()
	if s.Result != nil {
		r := *s.Result
		r.SubmittedAt = r.SubmittedAt.UTC()
		c.Result = &r
	}
	return &c
}

// SameSession fails t unless got and want are the same session.
func SameSession(t *testing.T, what string, got, want *store.Session) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, dump(g), dump(w))
	}
}

func dump(s *store.Session) string {
	if s == nil {
		return "<nil>"
	}
	r := "<nil>"
	if s.Result != nil {
		r = fmt.Sprintf("%+v", *s.Result)
	}
	return fmt.Sprintf("%+v metadata=%s result=%s", *s, s.Metadata, r)
}

// WaitSignal waits for a value on ch, failing if ch closes or nothing comes
// within a bound only a broken backend reaches.
func WaitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitBound)
	defer timer.Stop()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: watch channel closed instead of signalling", what)
		}
	case <-timer.C:
		t.Fatalf("%s: no watch signal within %v", what, waitBound)
	}
}

// WaitClosed drains ch until it is closed, failing after the bound.
func WaitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitBound)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("%s: watch channel not closed within %v", what, waitBound)
		}
	}
}

func testRoundTrip(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	in.Status = "" // Create stores a pending session whatever it is given
	mustCreate(t, s, in, longTTL)

	want := *in
	want.Status = store.StatusPending
	SameSession(t, "Get after Create", mustGet(t, s, in.ID), &want)

	// Empty and nil collections are what the caller made them.
	bare := &store.Session{
		ID:        NewID(),
		Owner:     store.Owner{Issuer: "i", Subject: "s"},
		Message:   "m",
		CreatedAt: in.CreatedAt,
		ExpiresAt: in.ExpiresAt,
		UpdatedAt: in.CreatedAt,
		Status:    store.StatusPending,
	}
	mustCreate(t, s, bare, longTTL)
	SameSession(t, "Get of a session without options", mustGet(t, s, bare.ID), bare)

	// The people a question is addressed to come back as given.
	addressed := NewSession(10 * time.Minute)
	addressed.To = []string{"bob", "carol@example.com"}
	mustCreate(t, s, addressed, longTTL)
	SameSession(t, "Get of an addressed session", mustGet(t, s, addressed.ID), addressed)

	got, err := s.Submit(t.Context(), in.ID, store.Answer{
		SelectedOptions: []string{"yes", "later"}, FreeText: "after lunch", Nonce: "n-1",
	})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if got.Status != store.StatusSubmitted || got.Nonce != "n-1" || got.Result == nil ||
		!reflect.DeepEqual(got.Result.SelectedOptions, []string{"yes", "later"}) ||
		got.Result.FreeText != "after lunch" || got.Result.SubmittedAt.IsZero() {
		t.Fatalf("Submit returned %s", dump(got))
	}
	if got.UpdatedAt.IsZero() || !got.UpdatedAt.Equal(got.Result.SubmittedAt) {
		t.Fatalf("UpdatedAt %v, want SubmittedAt %v", got.UpdatedAt, got.Result.SubmittedAt)
	}
	// Everything but the outcome is as created.
	want.Status, want.Result, want.Nonce, want.UpdatedAt = got.Status, got.Result, got.Nonce, got.UpdatedAt
	SameSession(t, "Submit result", got, &want)
	SameSession(t, "Get after Submit", mustGet(t, s, in.ID), got)
}

func testDeepCopy(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	orig := normalize(in)
	orig.PredefinedOptions = append([]string(nil), in.PredefinedOptions...)
	orig.Metadata = append([]byte(nil), in.Metadata...)
	orig.TokenHash = append([]byte(nil), in.TokenHash...)
	mustCreate(t, s, in, longTTL)

	// The caller keeps and changes what it passed to Create.
	in.Message = "changed"
	in.PredefinedOptions[0] = "changed"
	in.Metadata[1] = 'X'
	in.TokenHash[0] ^= 0xff
	got := mustGet(t, s, orig.ID)
	SameSession(t, "Get after the caller changed its session", got, orig)

	// Nor may a reader's changes leak back.
	got.Message = "changed"
	got.PredefinedOptions[0] = "changed"
	got.Metadata[1] = 'X'
	got.TokenHash[0] ^= 0xff
	SameSession(t, "Get after a reader changed its copy", mustGet(t, s, orig.ID), orig)

	sub, err := s.Submit(t.Context(), orig.ID, store.Answer{SelectedOptions: []string{"yes"}})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	want := normalize(sub)
	want.Result.SelectedOptions = []string{"yes"}
	sub.Result.SelectedOptions[0] = "changed"
	sub.Result.FreeText = "changed"
	SameSession(t, "Get after the submitter changed its copy", mustGet(t, s, orig.ID), want)
}

func testDuplicate(t *testing.T, s store.Store) {
	first := NewSession(10 * time.Minute)
	mustCreate(t, s, first, longTTL)
	second := NewSession(20 * time.Minute)
	second.ID = first.ID
	second.Message = "second"
	wantErr(t, "Create with a taken id", s.Create(t.Context(), second, longTTL), store.ErrExists)
	SameSession(t, "Get after the refused Create", mustGet(t, s, first.ID), first)

	// A finished session still holds its id.
	if _, err := s.Cancel(t.Context(), first.ID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	wantErr(t, "Create over a cancelled session", s.Create(t.Context(), second, longTTL), store.ErrExists)
}

func testNotFound(t *testing.T, s store.Store) {
	id := NewID()
	_, err := s.Get(t.Context(), id)
	wantErr(t, "Get", err, store.ErrNotFound)
	_, err = s.Submit(t.Context(), id, store.Answer{FreeText: "x", Nonce: "n"})
	wantErr(t, "Submit", err, store.ErrNotFound)
	_, err = s.Cancel(t.Context(), id)
	wantErr(t, "Cancel", err, store.ErrNotFound)
	// Nothing was created by asking.
	_, err = s.Get(t.Context(), id)
	wantErr(t, "Get again", err, store.ErrNotFound)
}

func testSubmitOnce(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	first, err := s.Submit(t.Context(), in.ID, store.Answer{SelectedOptions: []string{"yes"}})
	if err != nil {
		t.Fatalf("first Submit: %v", err)
	}
	_, err = s.Submit(t.Context(), in.ID, store.Answer{SelectedOptions: []string{"no"}})
	wantErr(t, "second Submit", err, store.ErrConflict)
	// An empty nonce never makes a retry: the same answer again still conflicts.
	_, err = s.Submit(t.Context(), in.ID, store.Answer{SelectedOptions: []string{"yes"}})
	wantErr(t, "repeated Submit without nonce", err, store.ErrConflict)
	SameSession(t, "Get after the conflicts", mustGet(t, s, in.ID), first)
}

// testFreeTextOnly: an answer without options stores them as an empty list,
// not as nothing, so every reader (REST, MCP output schemas) sees an array.
func testFreeTextOnly(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	got, err := s.Submit(t.Context(), in.ID, store.Answer{FreeText: "in my own words"})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	for what, sess := range map[string]*store.Session{"Submit": got, "Get": mustGet(t, s, in.ID)} {
		if sess.Result == nil || sess.Result.SelectedOptions == nil || len(sess.Result.SelectedOptions) != 0 {
			t.Fatalf("%s: result %+v, want selectedOptions [] (not nil)", what, sess.Result)
		}
	}
}

func testSameNonce(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	first, err := s.Submit(t.Context(), in.ID, store.Answer{SelectedOptions: []string{"yes"}, Nonce: "retry-me"})
	if err != nil {
		t.Fatalf("first Submit: %v", err)
	}
	// The retry carries the nonce; what it says otherwise does not matter,
	// it gets the stored outcome.
	again, err := s.Submit(t.Context(), in.ID, store.Answer{SelectedOptions: []string{"no"}, Nonce: "retry-me"})
	if err != nil {
		t.Fatalf("retry with the same nonce: %v", err)
	}
	SameSession(t, "retry result", again, first)
	SameSession(t, "Get after the retry", mustGet(t, s, in.ID), first)
}

func testDifferentNonce(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	first, err := s.Submit(t.Context(), in.ID, store.Answer{FreeText: "a", Nonce: "n-a"})
	if err != nil {
		t.Fatalf("first Submit: %v", err)
	}
	_, err = s.Submit(t.Context(), in.ID, store.Answer{FreeText: "b", Nonce: "n-b"})
	wantErr(t, "Submit with another nonce", err, store.ErrConflict)
	_, err = s.Submit(t.Context(), in.ID, store.Answer{FreeText: "a"})
	wantErr(t, "Submit without nonce", err, store.ErrConflict)
	SameSession(t, "Get after the conflicts", mustGet(t, s, in.ID), first)
}

func testSubmitAfterDeadline(t *testing.T, s store.Store) {
	in := NewSession(-time.Minute)
	mustCreate(t, s, in, longTTL)
	_, err := s.Submit(t.Context(), in.ID, store.Answer{FreeText: "too late", Nonce: "n"})
	wantErr(t, "Submit after the deadline", err, store.ErrGone)
	got := mustGet(t, s, in.ID)
	want := *in
	want.Status = store.StatusExpired
	want.UpdatedAt = in.ExpiresAt // it ended at its deadline
	SameSession(t, "Get after the late Submit", got, &want)
	// Once expired, always expired, also for a nonce retry.
	_, err = s.Submit(t.Context(), in.ID, store.Answer{FreeText: "too late", Nonce: "n"})
	wantErr(t, "second late Submit", err, store.ErrGone)
}

func testGetAfterDeadline(t *testing.T, s store.Store) {
	in := NewSession(-time.Second)
	mustCreate(t, s, in, longTTL)
	want := *in
	want.Status = store.StatusExpired
	want.UpdatedAt = in.ExpiresAt
	SameSession(t, "first Get after the deadline", mustGet(t, s, in.ID), &want)
	SameSession(t, "second Get after the deadline", mustGet(t, s, in.ID), &want)
	_, err := s.Cancel(t.Context(), in.ID)
	wantErr(t, "Cancel of an expired session", err, store.ErrGone)
}

func testCancel(t *testing.T, s store.Store) {
	ctx := t.Context()

	pending := NewSession(10 * time.Minute)
	mustCreate(t, s, pending, longTTL)
	got, err := s.Cancel(ctx, pending.ID)
	if err != nil {
		t.Fatalf("Cancel of a pending session: %v", err)
	}
	if got.Status != store.StatusCancelled || got.Result != nil || got.UpdatedAt.IsZero() {
		t.Fatalf("Cancel returned %s", dump(got))
	}
	want := *pending
	want.Status, want.UpdatedAt = store.StatusCancelled, got.UpdatedAt
	SameSession(t, "Cancel result", got, &want)
	again, err := s.Cancel(ctx, pending.ID)
	if err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
	SameSession(t, "second Cancel result", again, got)
	SameSession(t, "Get after Cancel", mustGet(t, s, pending.ID), got)
	_, err = s.Submit(ctx, pending.ID, store.Answer{FreeText: "x", Nonce: "n"})
	wantErr(t, "Submit of a cancelled session", err, store.ErrGone)

	answered := NewSession(10 * time.Minute)
	mustCreate(t, s, answered, longTTL)
	sub, err := s.Submit(ctx, answered.ID, store.Answer{FreeText: "x"})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	_, err = s.Cancel(ctx, answered.ID)
	wantErr(t, "Cancel of an answered session", err, store.ErrConflict)
	SameSession(t, "Get after the refused Cancel", mustGet(t, s, answered.ID), sub)

	late := NewSession(-time.Second)
	mustCreate(t, s, late, longTTL)
	_, err = s.Cancel(ctx, late.ID)
	wantErr(t, "Cancel after the deadline", err, store.ErrGone)
	if st := mustGet(t, s, late.ID).Status; st != store.StatusExpired {
		t.Fatalf("status after a late Cancel: %s, want expired", st)
	}
	_, err = s.Cancel(ctx, late.ID)
	wantErr(t, "Cancel of an expired session", err, store.ErrGone)
}

func testWatchSubmit(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	w1 := s.Watch(t.Context(), in.ID)
	w2 := s.Watch(t.Context(), in.ID)
	other := s.Watch(t.Context(), NewID())
	if _, err := s.Submit(t.Context(), in.ID, store.Answer{FreeText: "x"}); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	WaitSignal(t, w1, "first watcher after Submit")
	WaitSignal(t, w2, "second watcher after Submit")
	if st := mustGet(t, s, in.ID).Status; st != store.StatusSubmitted {
		t.Fatalf("status after the signal: %s", st)
	}
	// A watcher of another id may see a spurious signal (after a
	// resubscribe, say), but its channel must stay open.
	select {
	case _, ok := <-other:
		if !ok {
			t.Fatal("watch channel of an unrelated id closed")
		}
	default:
	}
}

func testWatchCancel(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	w := s.Watch(t.Context(), in.ID)
	if _, err := s.Cancel(t.Context(), in.ID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	WaitSignal(t, w, "watcher after Cancel")
	if st := mustGet(t, s, in.ID).Status; st != store.StatusCancelled {
		t.Fatalf("status after the signal: %s", st)
	}
}

func testWatchCtx(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	ctx, cancel := context.WithCancel(t.Context())
	w := s.Watch(ctx, in.ID)
	stays := s.Watch(t.Context(), in.ID)
	cancel()
	WaitClosed(t, w, "watcher after its ctx ended")
	// The other watcher of the same id is unaffected.
	if _, err := s.Submit(t.Context(), in.ID, store.Answer{FreeText: "x"}); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	WaitSignal(t, stays, "remaining watcher after Submit")

	// A ctx that is already over gives a channel that closes at once.
	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	WaitClosed(t, s.Watch(done, in.ID), "watcher with a finished ctx")
}

func testWatchExpiry(t *testing.T, s store.Store) {
	in := NewSession(-time.Second)
	mustCreate(t, s, in, longTTL)
	w := s.Watch(t.Context(), in.ID)
	// No timer fires at the deadline: whoever reads first records the expiry
	// and that must wake the watchers, wherever they are.
	if st := mustGet(t, s, in.ID).Status; st != store.StatusExpired {
		t.Fatalf("status after the deadline: %s", st)
	}
	WaitSignal(t, w, "watcher after the expiry")
}

func testTTL(t *testing.T, s store.Store) {
	in := NewSession(500 * time.Millisecond)
	mustCreate(t, s, in, shortTTL)
	mustGet(t, s, in.ID)

	ctx, cancel := context.WithTimeout(t.Context(), waitBound)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := s.Get(ctx, in.ID)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatalf("Get while waiting for the ttl: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("session still there %v after a ttl of %v", waitBound, shortTTL)
		case <-tick.C:
		}
	}
	// Its id is free again.
	mustCreate(t, s, in, longTTL)
	if st := mustGet(t, s, in.ID).Status; st != store.StatusPending && st != store.StatusExpired {
		t.Fatalf("status of the re-created session: %s", st)
	}
}

func testConcurrentSubmits(t *testing.T, s store.Store) {
	const sessions, submitters = 50, 40
	type outcome struct {
		answer string
		nonce  string
		sess   *store.Session
		err    error
	}
	ids := make([]string, sessions)
	for i := range ids {
		in := NewSession(10 * time.Minute)
		mustCreate(t, s, in, longTTL)
		ids[i] = in.ID
	}
	results := make([][]outcome, sessions)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range sessions {
		results[i] = make([]outcome, submitters)
		for j := range submitters {
			wg.Go(func() {
				o := &results[i][j]
				o.answer = fmt.Sprintf("answer %d/%d", i, j)
				o.nonce = fmt.Sprintf("nonce-%d-%d", i, j)
				<-start
				o.sess, o.err = s.Submit(t.Context(), ids[i], store.Answer{FreeText: o.answer, Nonce: o.nonce})
			})
		}
	}
	close(start)
	wg.Wait()

	for i, id := range ids {
		var winner *outcome
		for j := range results[i] {
			o := &results[i][j]
			switch {
			case o.err == nil:
				if winner != nil {
					t.Fatalf("session %d: two winners: %q and %q", i, winner.answer, o.answer)
				}
				winner = o
			case !errors.Is(o.err, store.ErrConflict):
				t.Fatalf("session %d, submitter %d: %v, want ErrConflict", i, j, o.err)
			}
		}
		if winner == nil {
			t.Fatalf("session %d: no winner", i)
		}
		got := mustGet(t, s, id)
		if got.Result == nil || got.Result.FreeText != winner.answer || got.Nonce != winner.nonce {
			t.Fatalf("session %d: stored %s, winner answered %q with nonce %q", i, dump(got), winner.answer, winner.nonce)
		}
		SameSession(t, fmt.Sprintf("session %d: Get vs the winner's result", i), got, winner.sess)
	}
}

func testClose(t *testing.T, s store.Store) {
	in := NewSession(10 * time.Minute)
	mustCreate(t, s, in, longTTL)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	w := s.Watch(t.Context(), in.ID)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Waiters must wake up rather than wait on a store that is gone.
	WaitClosed(t, w, "watcher after Close")
	WaitClosed(t, s.Watch(t.Context(), in.ID), "Watch after Close")
	_, err := s.Get(t.Context(), in.ID)
	wantErr(t, "Get after Close", err, store.ErrUnavailable)
	_, err = s.Submit(t.Context(), in.ID, store.Answer{FreeText: "x"})
	wantErr(t, "Submit after Close", err, store.ErrUnavailable)
	wantErr(t, "Ping after Close", s.Ping(t.Context()), store.ErrUnavailable)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
