package feedback

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// expirer reads each question this instance created once its deadline has
// passed. Expiry is data, decided by whoever reads first; without a reader
// a question nobody waits for would never be counted or announced as
// expired. One timer serves all questions, through a heap of deadlines;
// each due question gets one Await, the module's one waiting policy.
type expirer struct {
	hub    *Hub
	mu     sync.Mutex
	due    deadlines
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	// busy bounds the Awaits running at once (a burst of deadlines, or a
	// store whose clock is behind, must not pile up goroutines).
	busy chan struct{}
	wg   sync.WaitGroup
}

const (
	// expiryRetries and expiryRetryAfter: a store that is down at a
	// deadline is asked again this many times, this far apart.
	expiryRetries    = 5
	expiryRetryAfter = 5 * time.Second
	maxExpiryChecks  = 32
)

type deadline struct {
	at    time.Time
	id    string
	tries int
}

type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

func newExpirer(h *Hub) *expirer {
	ctx, cancel := context.WithCancel(context.Background())
	e := &expirer{hub: h, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
		busy: make(chan struct{}, maxExpiryChecks)}
	go e.run(ctx)
	return e
}

func (e *expirer) add(id string, at time.Time) { e.push(deadline{at: at, id: id}) }

// push adds d and wakes the loop only when d is now the earliest deadline:
// the loop's timer already covers any later one (it recomputes its wait
// from the earliest after every wake), so most creates cost no wake-up.
func (e *expirer) push(d deadline) {
	e.mu.Lock()
	heap.Push(&e.due, d)
	first := e.due[0].id == d.id && e.due[0].at.Equal(d.at)
	e.mu.Unlock()
	if !first {
		return
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *expirer) stop() {
	e.cancel()
	<-e.done
	e.wg.Wait()
}

func (e *expirer) run(ctx context.Context) {
	defer close(e.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		e.mu.Lock()
		wait := time.Hour
		if len(e.due) > 0 {
			wait = max(time.Until(e.due[0].at), 0)
		}
		e.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
			continue
		case <-timer.C:
		}
		for {
			e.mu.Lock()
			if len(e.due) == 0 || e.due[0].at.After(time.Now()) {
				e.mu.Unlock()
				break
			}
			d := heap.Pop(&e.due).(deadline)
			e.mu.Unlock()
			select {
			case e.busy <- struct{}{}:
			case <-ctx.Done():
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer func() { <-e.busy }()
				e.check(ctx, d)
			}()
		}
	}
}

// check waits for the store to see the deadline (Await gives its clock
// MaxClockSkew); the read past the deadline records the expiry and its
// event. A store that is down is asked again a few times.
func (e *expirer) check(ctx context.Context, d deadline) {
	_, err := e.hub.await(ctx, d.id, time.Now(), Every{})
	if errors.Is(err, store.ErrUnavailable) && ctx.Err() == nil && d.tries < expiryRetries {
		d.tries++
		d.at = time.Now().Add(expiryRetryAfter)
		e.push(d)
	}
}
