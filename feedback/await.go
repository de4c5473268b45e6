package feedback

import (
	"context"
	"errors"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The one waiting policy. Every wait in the module (a blocking tool call, a
// WebSocket watcher, the expirer) is Await, so they agree on these.
const (
	// deadlineSlack is added to a deadline before the question is re-read:
	// the store judges expiry by its own clock, strictly after the deadline.
	deadlineSlack = 20 * time.Millisecond
	// skewRecheck is how soon to look again when the store does not yet see
	// a deadline that this machine's clock says has passed; it doubles up
	// to skewRecheckMax.
	skewRecheck    = 250 * time.Millisecond
	skewRecheckMax = 5 * time.Second
	// MaxClockSkew is how long a bounded wait keeps asking a store whose
	// clock is behind; then it ends with what the store says (pending).
	MaxClockSkew = 5 * time.Second
	// unavailableRetry is how soon to read again after the store failed,
	// in case no change signal comes when it is back.
	unavailableRetry = time.Second
)

// ErrStoreClosed: the store was closed under a wait (its configuration was
// replaced by one with another store). The question lives on there; the
// caller should tell its client to reconnect or ask again.
var ErrStoreClosed = errors.New("session store closed")

// Await waits until question id leaves pending, or until `until` has
// passed (a zero until: no limit but the question's own deadline), and
// returns the question as last read:
//   - terminal, nil: answered, expired or withdrawn;
//   - pending, nil: the wait ran out (for a wait to the question's deadline,
//     only after the store's clock was given MaxClockSkew to agree);
//   - last, ctx.Err(): the caller went away (context.Cause says why);
//   - last, ErrStoreClosed: see there;
//   - last, store.ErrUnavailable: the store stayed down until `until`
//     (an unbounded wait keeps trying);
//   - nil, store.ErrNotFound (or another error): the question is gone.
//
// It wakes only on the store's change feed, at deadlines, and on bounded
// rechecks (clock skew, a store that is down); it never polls otherwise.
// The caller has checked who may see the question.
func (s *Service) Await(ctx context.Context, id string, until time.Time) (*Session, error) {
	return s.hub.await(ctx, id, until, Every{})
}

// Every is periodic work a waiter does while it waits (MCP progress, a
// WebSocket's pings): Fn runs on the waiting goroutine every D, on the
// wait's own timer, so that a held connection needs no goroutine and no
// second timer for it. Fn must not block
// for long; it returns false to end the wait (with ctx's error, if any,
// else context.Canceled).
type Every struct {
	D  time.Duration
	Fn func() bool
}

// AwaitEvery is Await with periodic work beside it.
func (s *Service) AwaitEvery(ctx context.Context, id string, until time.Time, e Every) (*Session, error) {
	return s.hub.await(ctx, id, until, e)
}

func (h *Hub) await(ctx context.Context, id string, until time.Time, every Every) (*Session, error) {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	// Subscribe before the first read, so that a change between a caller's
	// earlier read and this one is never missed.
	changed := h.store.Watch(wctx, id)

	// One timer serves both the next read and the periodic work.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var tick *ticks
	if every.D > 0 && every.Fn != nil {
		tick = &ticks{d: every.D, fn: every.Fn, next: time.Now().Add(every.D)}
	}
	var (
		last      *Session
		skewSince time.Time
		skewWait  = skewRecheck
	)
	for {
		cur, err := h.store.Get(ctx, id)
		now := time.Now()
		var wait time.Duration
		switch {
		case err == nil:
			last = cur
			if cur.Status.Terminal() {
				return cur, nil
			}
			end := cur.ExpiresAt
			if !until.IsZero() && until.Before(end) {
				end = until
			}
			switch {
			case now.Before(end.Add(deadlineSlack)):
				wait = end.Add(deadlineSlack).Sub(now)
			case end.Before(cur.ExpiresAt):
				return cur, nil // the caller's wait ran out; the question is open
			default:
				// Past the question's deadline here, not yet by the store.
				if skewSince.IsZero() {
					skewSince = now
				}
				wait = skewWait
				skewWait = min(skewWait*2, skewRecheckMax)
				if !until.IsZero() {
					left := skewSince.Add(MaxClockSkew).Sub(now)
					if left <= 0 {
						return cur, nil
					}
					wait = min(wait, left)
				}
			}
		case ctx.Err() != nil:
			return last, ctx.Err()
		case errors.Is(err, store.ErrUnavailable):
			if !until.IsZero() && !now.Before(until) {
				return last, err
			}
			wait = unavailableRetry
			if !until.IsZero() {
				wait = min(wait, until.Sub(now))
			}
		default:
			return nil, err
		}

		if err := sleep(ctx, wait, timer, changed, tick); err != nil {
			return last, err
		}
	}
}

// ticks is a waiter's periodic work: fn every d, next due at next. Like a
// time.Ticker it keeps its period and drops the ticks it is late for.
type ticks struct {
	d    time.Duration
	fn   func() bool
	next time.Time
}

// sleep waits until it is time to read the question again: a change
// signal, or wait elapsed. Due ticks run the periodic work in between, on
// the same timer. It returns ctx's error, ErrStoreClosed, or
// context.Canceled when the periodic work asks to stop.
func sleep(ctx context.Context, wait time.Duration, timer *time.Timer, changed <-chan struct{}, tick *ticks) error {
	defer timer.Stop()
	wakeAt := time.Now().Add(wait)
	for {
		at := wakeAt
		if tick != nil && tick.next.Before(at) {
			at = tick.next
		}
		timer.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-changed:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return ErrStoreClosed
			}
			return nil
		case <-timer.C:
		}
		now := time.Now()
		if tick != nil && !now.Before(tick.next) {
			if tick.next = tick.next.Add(tick.d); !tick.next.After(now) {
				tick.next = now.Add(tick.d)
			}
			if !tick.fn() {
				if err := ctx.Err(); err != nil {
					return err
				}
				return context.Canceled
			}
		}
		if !now.Before(wakeAt) {
			return nil
		}
	}
}
