package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// flightRecorder is a fetch for readCoalescer whose calls block until
// released; each call's result carries its number.
type flightRecorder struct {
	calls   atomic.Int64
	started chan int64
	release chan error
}

func newFlightRecorder() *flightRecorder {
	return &flightRecorder{started: make(chan int64, 16), release: make(chan error)}
}

func (f *flightRecorder) fetch(ctx context.Context, id string) (*qdata, *qstate, error) {
	n := f.calls.Add(1)
	f.started <- n
	select {
	case err := <-f.release:
		if err != nil {
			return nil, nil, err
		}
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	return &qdata{message: id}, &qstate{nonce: string(rune('0' + n))}, nil
}

func (f *flightRecorder) waitStarted(t *testing.T, want int64) {
	t.Helper()
	select {
	case n := <-f.started:
		if n != want {
			t.Fatalf("flight %d started, want %d", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("flight %d never started", want)
	}
}

type readResult struct {
	st  *qstate
	err error
}

// readAsync reads "q" through c in the background; the result arrives on
// the channel.
func readAsync(ctx context.Context, c *readCoalescer, f *flightRecorder) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		_, st, err := c.read(ctx, "q", f.fetch)
		ch <- readResult{st, err}
	}()
	return ch
}

// Reads that arrive while one is on the wire share the next one, and none
// is answered by a read sent before it arrived.
func TestReadCoalescerRidesTheNextFlight(t *testing.T) {
	var c readCoalescer
	queued := watchQueue(&c)
	f := newFlightRecorder()
	ctx := t.Context()
	first := readAsync(ctx, &c, f)
	f.waitStarted(t, 1)

	const riders = 8
	results := make(chan readResult, riders)
	for range riders {
		go func() {
			_, st, err := c.read(ctx, "q", f.fetch)
			results <- readResult{st, err}
		}()
	}
	for range riders {
		<-queued
	}
	f.release <- nil // flight 1 lands; flight 2 leaves with every rider
	if r := <-first; r.err != nil || r.st.nonce != "1" {
		t.Fatalf("first read: %+v", r)
	}
	f.waitStarted(t, 2)
	f.release <- nil
	for range riders {
		if r := <-results; r.err != nil || r.st.nonce != "2" {
			t.Fatalf("rider got %+v, want flight 2's answer", r)
		}
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d reads went to Redis for 1 + %d callers, want 2", n, riders)
	}
	c.mu.Lock()
	left := len(c.m)
	c.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d flights left behind", left)
	}
}

// watchQueue returns a channel that gets a value for each read that
// queues behind the one on the wire.
func watchQueue(c *readCoalescer) <-chan struct{} {
	ch := make(chan struct{}, 64)
	c.queued = func() { ch <- struct{}{} }
	return ch
}

// A rider that gives up leaves nothing stranded: the next flight still
// goes, and later reads are answered.
func TestReadCoalescerRiderLeaves(t *testing.T) {
	var c readCoalescer
	queued := watchQueue(&c)
	f := newFlightRecorder()
	first := readAsync(t.Context(), &c, f)
	f.waitStarted(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	left := make(chan error, 1)
	go func() {
		_, _, err := c.read(ctx, "q", f.fetch)
		left <- err
	}()
	<-queued
	cancel()
	if err := <-left; !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("rider that left: %v", err)
	}
	f.release <- nil
	<-first
	f.waitStarted(t, 2) // flown for nobody, but flown
	f.release <- nil
	later := readAsync(t.Context(), &c, f)
	f.waitStarted(t, 3)
	f.release <- nil
	if r := <-later; r.err != nil || r.st.nonce != "3" {
		t.Fatalf("later read: %+v", r)
	}
}

// When the read on the wire finds Redis unavailable, those waiting behind
// it get that error at once instead of a second timeout.
func TestReadCoalescerUnavailable(t *testing.T) {
	var c readCoalescer
	queued := watchQueue(&c)
	f := newFlightRecorder()
	first := readAsync(t.Context(), &c, f)
	f.waitStarted(t, 1)
	rider := readAsync(t.Context(), &c, f)
	<-queued
	down := errors.Join(ErrUnavailable, errors.New("connection refused"))
	f.release <- down
	for _, ch := range []<-chan readResult{first, rider} {
		if r := <-ch; !errors.Is(r.err, ErrUnavailable) {
			t.Fatalf("read while Redis is down: %+v", r)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d reads went to Redis, want 1", n)
	}
}
