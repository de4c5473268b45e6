package mcpfeedback

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// lifecycle turns what happens to sessions into metrics and one log line
// per event. It lives in the pool beside its store, so it sees the changes
// of every configuration that shares that store; the logger is the newest
// configuration's.
type lifecycle struct {
	store  store.Store
	logger atomic.Pointer[zap.Logger]
	// notifier is the newest configuration's webhooks (nil: none).
	notifier atomic.Pointer[notify.Notifier]
	exp      *expirer
}

func newLifecycle(st store.Store) *lifecycle {
	l := &lifecycle{store: st}
	l.logger.Store(zap.NewNop())
	l.exp = newExpirer(st)
	if h, ok := st.(interface{ OnChange(store.ChangeFunc) }); ok {
		h.OnChange(l.changed)
	}
	return l
}

func (l *lifecycle) close() { l.exp.stop() }

// Created implements handlers.Observer.
func (l *lifecycle) Created(s *store.Session, feedbackURL string) {
	countCreated(s)
	l.notifier.Load().Send(notify.EventCreated, s, feedbackURL)
	l.exp.add(s.ID, s.ExpiresAt)
	l.logger.Load().Info("session created",
		zap.String("session", s.ID), zap.String("sub", s.Owner.Subject),
		zap.Duration("timeout", s.ExpiresAt.Sub(s.CreatedAt)), zap.Int("options", len(s.PredefinedOptions)))
}

// changed is the store's ChangeFunc. It never logs the answer itself.
func (l *lifecycle) changed(s *store.Session) {
	countChange(s)
	switch s.Status {
	case store.StatusExpired:
		l.notifier.Load().Send(notify.EventExpired, s, "")
	case store.StatusCancelled:
		l.notifier.Load().Send(notify.EventCancelled, s, "")
	}
	l.logger.Load().Info("session "+string(s.Status),
		zap.String("session", s.ID), zap.String("sub", s.Owner.Subject),
		zap.String("outcome", string(s.Status)), zap.Duration("latency", latency(s)))
}

// AuthFailed implements handlers.Observer.
func (l *lifecycle) AuthFailed(reason string) { metricAuthFailures.WithLabelValues(reason).Inc() }

// StoreFailed implements handlers.Observer.
func (l *lifecycle) StoreFailed(op string) { metricStoreErrors.WithLabelValues(op).Inc() }

// WebSockets implements handlers.Observer.
func (l *lifecycle) WebSockets(delta int) { metricWebSockets.Add(float64(delta)) }

// MCPSessions implements handlers.Observer.
func (l *lifecycle) MCPSessions(delta int) { metricMCPSessions.Add(float64(delta)) }

// ToolCall implements handlers.Observer.
func (l *lifecycle) ToolCall(tool, outcome string) {
	metricToolCalls.WithLabelValues(tool, outcome).Inc()
}

// expirer reads each session this instance created once its deadline has
// passed. Expiry is data, decided by whoever reads first; without a reader
// a question nobody waits for would never be counted or announced as
// expired. One timer serves all sessions, through a heap of deadlines.
type expirer struct {
	store  store.Store
	mu     sync.Mutex
	due    deadlines
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// expiryGrace lets clocks settle: the store decides with its own clock.
const expiryGrace = time.Second

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

func newExpirer(st store.Store) *expirer {
	ctx, cancel := context.WithCancel(context.Background())
	e := &expirer{store: st, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go e.run(ctx)
	return e
}

func (e *expirer) add(id string, at time.Time) {
	e.mu.Lock()
	heap.Push(&e.due, deadline{at: at.Add(expiryGrace), id: id})
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *expirer) stop() {
	e.cancel()
	<-e.done
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
		e.mu.Lock()
		var ready []deadline
		for len(e.due) > 0 && !e.due[0].at.After(time.Now()) {
			ready = append(ready, heap.Pop(&e.due).(deadline))
		}
		e.mu.Unlock()
		for _, d := range ready {
			e.check(ctx, d)
		}
	}
}

// check reads one session; a read past the deadline records the expiry.
// If the store still says pending (its clock is behind ours) or cannot be
// reached, try again a little later, a few times.
func (e *expirer) check(ctx context.Context, d deadline) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	s, err := e.store.Get(rctx, d.id)
	cancel()
	if (err == nil && s.Status == store.StatusPending) || (ctx.Err() == nil && errors.Is(err, store.ErrUnavailable)) {
		if d.tries < 5 {
			d.tries++
			d.at = time.Now().Add(time.Duration(d.tries) * 5 * time.Second)
			e.mu.Lock()
			heap.Push(&e.due, d)
			e.mu.Unlock()
		}
	}
}
