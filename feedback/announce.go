package feedback

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// announcer tells the inboxes of a question's people, on every instance,
// that it was created or changed (store.Store.Announce on PersonTopic).
// The instance that made the change announces it: events happen there
// once, while an inbox may be open anywhere.
//
// Announcing is a network call (SPUBLISH) and events fire on the path of
// the change (an answer, a create), so a queue and one goroutine take it
// off that path. When the queue is full the announcement is dropped: the
// inbox refreshes by itself now and then, and a create or an answer must
// never wait on an inbox.
type announcer struct {
	on    atomic.Bool
	once  sync.Once
	store interface {
		Announce(ctx context.Context, topic string) error
	}
	queue  chan []string
	cancel context.CancelFunc
	done   chan struct{}
	// failed, when set, is told of each announcement that was dropped
	// (ErrAnnounceDropped) or that the store refused (metrics).
	failed atomic.Pointer[func(error)]
}

// ErrAnnounceDropped: the announcement queue was full.
var ErrAnnounceDropped = errors.New("feedback: inbox announcement dropped: the queue is full")

const (
	announceQueue   = 1024
	announceTimeout = 5 * time.Second
)

// announcePeople turns announcing on (a configuration with the inbox
// exists); it stays on for the Hub's life.
func (h *Hub) announcePeople() {
	h.ann.once.Do(func() {
		a := &h.ann
		a.store = h.store
		a.queue = make(chan []string, announceQueue)
		a.done = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		a.cancel = cancel
		go a.run(ctx)
		a.on.Store(true)
	})
}

// OnAnnounceFailure sets fn to be told of each inbox announcement that was
// dropped (ErrAnnounceDropped) or failed in the store. It runs on the
// path of a change or on the announcing goroutine: it must not block.
func (h *Hub) OnAnnounceFailure(fn func(error)) { h.ann.failed.Store(&fn) }

func (a *announcer) fail(err error) {
	if fn := a.failed.Load(); fn != nil {
		(*fn)(err)
	}
}

func (a *announcer) enqueue(people []string) {
	if !a.on.Load() || len(people) == 0 {
		return
	}
	select {
	case a.queue <- people:
	default:
		a.fail(ErrAnnounceDropped)
	}
}

func (a *announcer) run(ctx context.Context) {
	defer close(a.done)
	for {
		select {
		case <-ctx.Done():
			return
		case people := <-a.queue:
			for _, p := range people {
				actx, cancel := context.WithTimeout(ctx, announceTimeout)
				if err := a.store.Announce(actx, PersonTopic(p)); err != nil {
					a.fail(err)
				}
				cancel()
			}
		}
	}
}

// stop ends the goroutine, dropping what is queued (the store is closing).
func (a *announcer) stop() {
	if !a.on.Load() {
		return
	}
	a.on.Store(false)
	a.cancel()
	<-a.done
}
