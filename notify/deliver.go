package notify

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// What the webhook, ntfy and Web Push senders share: their delivery
// settings, a queue that never blocks the sender, and the retry loop around
// one delivery.

// Delivery tunes how a sender delivers; the zero value is production's
// (each sender names its own defaults for attempts and waits).
type Delivery struct {
	// Client sends the requests. Whatever is given, redirects are never
	// followed (a redirect would carry the body, capability links and
	// tokens included, to a target nobody configured): a copy of it is
	// used with CheckRedirect replaced.
	Client      *http.Client
	MaxAttempts int
	MaxWait     time.Duration // longest wait between attempts, Retry-After included
	// QueueSize is how many deliveries may wait (per receiver where a
	// sender has several); default 1000. When full, the oldest waiting
	// delivery is dropped.
	QueueSize int
	// Observe, when set, is told how each delivery ended: receiver is the
	// receiver's scheme://host (never the full URL, which may be a secret),
	// event the event name, outcome one of the Outcome constants. It is
	// called from several goroutines and must not block. Deliveries cut
	// short by Close are not reported.
	Observe func(receiver, event, outcome string)
	Sleep   func(context.Context, time.Duration) // for tests; default waits on a timer
	Logger  *zap.Logger
}

// defaults fills what is unset: attempts and maxWait are the sender's own
// defaults, newClient makes its client when none is given.
func (d *Delivery) defaults(attempts int, maxWait time.Duration, newClient func() *http.Client) {
	if d.Client == nil {
		d.Client = newClient()
	} else {
		c := *d.Client
		d.Client = &c
	}
	d.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if d.MaxAttempts <= 0 {
		d.MaxAttempts = attempts
	}
	if d.MaxWait <= 0 {
		d.MaxWait = maxWait
	}
	if d.QueueSize <= 0 {
		d.QueueSize = 1000
	}
	if d.Sleep == nil {
		d.Sleep = sleep
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Observe == nil {
		d.Observe = func(string, string, string) {}
	}
}

// plainClient is the webhook and ntfy client before defaults.
func plainClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// enqueueDropOldest puts v on q without blocking. When q is full its oldest
// waiting item makes room (and is handed to dropped); if other senders keep
// it full, v itself is dropped.
func enqueueDropOldest[T any](q chan T, v T, dropped func(T)) {
	for range 3 {
		select {
		case q <- v:
			return
		default:
		}
		select {
		case old := <-q:
			dropped(old)
		default:
		}
	}
	dropped(v)
}

// tryResult is how a delivery's last attempt ended.
type tryResult struct {
	attempt int
	status  int // 0 when the request failed (err)
	err     error
	// delivered: a 2xx; stopped: the sender was closed meanwhile (report
	// nothing).
	delivered, stopped bool
}

// retryDelivery calls try until it gets a 2xx, gets an answer that
// retryable refuses, or maxAttempts run out, waiting between attempts the
// exponential backoff or the receiver's Retry-After, at most maxWait.
func retryDelivery(ctx context.Context, maxAttempts int, maxWait time.Duration, sleep func(context.Context, time.Duration),
	try func() (status int, retryAfter time.Duration, err error), retryable func(status int, err error) bool) tryResult {
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := try()
		if ctx.Err() != nil {
			return tryResult{attempt: attempt, stopped: true}
		}
		res := tryResult{attempt: attempt, status: status, err: err, delivered: err == nil && status/100 == 2}
		if res.delivered || !retryable(status, err) || attempt >= maxAttempts {
			return res
		}
		wait := backoff(attempt)
		if retryAfter > 0 {
			wait = retryAfter
		}
		sleep(ctx, min(wait, maxWait))
		if ctx.Err() != nil {
			return tryResult{attempt: attempt, stopped: true}
		}
	}
}

// transient is the usual retry rule: the request failed, the receiver is
// busy (408, 429) or broken (5xx).
func transient(status int, err error) bool {
	return err != nil || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status/100 == 5
}
