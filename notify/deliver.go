package notify

import (
	"context"
	"net/http"
	"time"
)

// What the webhook, ntfy and Web Push senders share: a queue that never
// blocks the sender, and the retry loop around one delivery.

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
