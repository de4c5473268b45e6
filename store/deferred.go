package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Deferred backoff: how soon to try opening the backend again.
const (
	deferredMinBackoff = 250 * time.Millisecond
	deferredMaxBackoff = 5 * time.Second
)

// deferred is a Store whose backend could not be reached when it was
// opened. Caddy is often the front door of many sites, so one module's
// store being down at start-up must not refuse the whole configuration:
// until a background loop manages to open the backend, every operation
// answers ErrUnavailable (503 with Retry-After, /health 503); from then on
// everything passes through.
type deferred struct {
	open  func() (Store, error)
	event func(err error) // told of each failed attempt (nil) and of success (err nil)

	mu       sync.Mutex
	inner    Store
	onChange ChangeFunc
	lastErr  error
	// waits holds the watchers registered before the backend was there; on
	// connect their channels close, so that waiters subscribe again on the
	// real backend (Await reports ErrStoreClosed-style endings: a client
	// reconnects or asks again).
	waits *hub

	cancel context.CancelFunc
	done   chan struct{}
}

// OpenDeferred returns a Store that opens its backend with open in the
// background, retrying with backoff until it succeeds or the Store is
// closed. firstErr is why the first attempt failed; event, when not nil,
// is told of every later failure and, with nil, of the success.
func OpenDeferred(open func() (Store, error), firstErr error, event func(err error)) Store {
	ctx, cancel := context.WithCancel(context.Background())
	d := &deferred{open: open, event: event, lastErr: firstErr, waits: newHub(), cancel: cancel, done: make(chan struct{})}
	if d.event == nil {
		d.event = func(error) {}
	}
	go d.connect(ctx)
	return d
}

func (d *deferred) connect(ctx context.Context) {
	defer close(d.done)
	backoff := deferredMinBackoff
	t := time.NewTimer(backoff)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := d.open()
		if err != nil {
			d.mu.Lock()
			d.lastErr = err
			d.mu.Unlock()
			d.event(err)
			backoff = min(backoff*2, deferredMaxBackoff)
			t.Reset(backoff)
			continue
		}
		d.mu.Lock()
		if ctx.Err() != nil { // closed while opening
			d.mu.Unlock()
			_ = st.Close()
			return
		}
		if d.onChange != nil {
			st.OnChange(d.onChange)
		}
		d.inner = st
		d.mu.Unlock()
		d.waits.close()
		d.event(nil)
		return
	}
}

// backend is the opened backend, or the error that says why there is none.
func (d *deferred) backend() (Store, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inner != nil {
		return d.inner, nil
	}
	return nil, fmt.Errorf("%w: not reachable since start-up (retrying): %w", ErrUnavailable, d.lastErr)
}

// Create implements Store.
func (d *deferred) Create(ctx context.Context, s *Session, ttl time.Duration) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.Create(ctx, s, ttl)
}

// Get implements Store.
func (d *deferred) Get(ctx context.Context, id string) (*Session, error) {
	st, err := d.backend()
	if err != nil {
		return nil, err
	}
	return st.Get(ctx, id)
}

// Submit implements Store.
func (d *deferred) Submit(ctx context.Context, id string, a Answer) (*Session, error) {
	st, err := d.backend()
	if err != nil {
		return nil, err
	}
	return st.Submit(ctx, id, a)
}

// Cancel implements Store.
func (d *deferred) Cancel(ctx context.Context, id string) (*Session, error) {
	st, err := d.backend()
	if err != nil {
		return nil, err
	}
	return st.Cancel(ctx, id)
}

// Admit implements Limiter.
func (d *deferred) Admit(ctx context.Context, owner Owner, id string, deadline time.Time, q Quota) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.Admit(ctx, owner, id, deadline, q)
}

// Watch implements Store.
func (d *deferred) Watch(ctx context.Context, id string) <-chan struct{} {
	d.mu.Lock()
	st := d.inner
	d.mu.Unlock()
	if st != nil {
		return st.Watch(ctx, id)
	}
	// Closed on connect (or Close); a watcher registered in the moment
	// between the check above and connect gets a closed channel at once.
	return d.waits.watch(ctx, id)
}

// Announce implements Store.
func (d *deferred) Announce(ctx context.Context, topic string) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.Announce(ctx, topic)
}

// OnChange implements Store.
func (d *deferred) OnChange(fn ChangeFunc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onChange = fn
	if d.inner != nil {
		d.inner.OnChange(fn)
	}
}

// Ping implements Store.
func (d *deferred) Ping(ctx context.Context) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.Ping(ctx)
}

// Close stops trying and closes the backend if it was opened.
func (d *deferred) Close() error {
	d.cancel()
	<-d.done
	d.waits.close()
	d.mu.Lock()
	st := d.inner
	d.mu.Unlock()
	if st != nil {
		return st.Close()
	}
	return nil
}

var _ Store = (*deferred)(nil)

// Put implements KV.
func (d *deferred) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.Put(ctx, key, value, ttl)
}

// PutNew implements KV.
func (d *deferred) PutNew(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	st, err := d.backend()
	if err != nil {
		return false, err
	}
	return st.PutNew(ctx, key, value, ttl)
}

// Load implements KV.
func (d *deferred) Load(ctx context.Context, key string) ([]byte, error) {
	st, err := d.backend()
	if err != nil {
		return nil, err
	}
	return st.Load(ctx, key)
}

// Take implements KV.
func (d *deferred) Take(ctx context.Context, key string) ([]byte, error) {
	st, err := d.backend()
	if err != nil {
		return nil, err
	}
	return st.Take(ctx, key)
}

// Delete implements KV.
func (d *deferred) Delete(ctx context.Context, key string) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.Delete(ctx, key)
}

// AddMember implements KV.
func (d *deferred) AddMember(ctx context.Context, key, member string, until time.Time) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.AddMember(ctx, key, member, until)
}

// RemoveMember implements KV.
func (d *deferred) RemoveMember(ctx context.Context, key, member string) error {
	st, err := d.backend()
	if err != nil {
		return err
	}
	return st.RemoveMember(ctx, key, member)
}

// Members implements KV.
func (d *deferred) Members(ctx context.Context, key string) ([]string, error) {
	st, err := d.backend()
	if err != nil {
		return nil, err
	}
	return st.Members(ctx, key)
}
