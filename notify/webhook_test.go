package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

type received struct {
	header http.Header
	body   []byte
}

// receiver is a real local HTTP server that answers with the statuses
// given, in order (200 once they run out), and reports every request.
func receiver(t *testing.T, statuses ...int) (*httptest.Server, chan received) {
	t.Helper()
	got := make(chan received, 100)
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Clone(), body}
		mu.Lock()
		status := 200
		if len(statuses) > 0 {
			status, statuses = statuses[0], statuses[1:]
		}
		mu.Unlock()
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "7")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func session() *store.Session {
	return &store.Session{ID: "6f1c2b7e-0000-4000-8000-000000000001", Message: "Deploy?", PredefinedOptions: []string{"yes", "no"},
		Status: store.StatusPending, ExpiresAt: time.Now().Add(time.Minute), Owner: store.Owner{Subject: "alice"}}
}

func next(t *testing.T, ch chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
		return received{}
	}
}

func TestSignedJSONDelivery(t *testing.T) {
	srv, got := receiver(t)
	n := New([]Webhook{{URL: srv.URL, Secret: "s3cret", Headers: map[string]string{"Authorization": "Bearer hook"}}}, Options{})
	defer n.Close()
	n.Send(EventCreated, session(), "https://fb.example/feedback/x#t=cap")
	r := next(t, got)
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(r.body)
	if r.header.Get("X-Feedback-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Fatalf("signature %q does not match the body", r.header.Get("X-Feedback-Signature"))
	}
	var ev Event
	if err := json.Unmarshal(r.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Event != EventCreated || ev.SessionID != session().ID || ev.FeedbackURL == "" || ev.Owner.Subject != "alice" ||
		ev.ID == "" || r.header.Get("X-Feedback-Delivery") != ev.ID || r.header.Get("Authorization") != "Bearer hook" {
		t.Fatalf("delivery %+v %v", ev, r.header)
	}
}

// TestRetriesHonourRetryAfter: 503 and 429 are retried, waiting what the
// receiver asked for; the delivery id stays the same.
func TestRetriesHonourRetryAfter(t *testing.T) {
	srv, got := receiver(t, 500, 429, 503)
	var mu sync.Mutex
	var waits []time.Duration
	n := New([]Webhook{{URL: srv.URL}}, Options{Delivery: Delivery{Sleep: func(_ context.Context, d time.Duration) {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
	}}})
	defer n.Close()
	n.Send(EventCreated, session(), "")
	ids := map[string]bool{}
	for range 4 {
		ids[next(t, got).header.Get("X-Feedback-Delivery")] = true
	}
	if len(ids) != 1 {
		t.Fatalf("delivery ids changed between retries: %v", ids)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != 3 || waits[1] != 7*time.Second || waits[2] != 7*time.Second || waits[0] < time.Second {
		t.Fatalf("waits %v, want backoff then Retry-After 7s twice", waits)
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	srv, got := receiver(t, 404, 200)
	n := New([]Webhook{{URL: srv.URL}}, Options{Delivery: Delivery{Sleep: func(context.Context, time.Duration) {}}})
	n.Send(EventCreated, session(), "")
	next(t, got)
	n.Close() // waits for the worker: a retry would have been sent by now
	if len(got) != 0 {
		t.Fatal("a 404 was retried")
	}
}

func TestFormats(t *testing.T) {
	srv, got := receiver(t)
	n := New([]Webhook{
		{URL: srv.URL + "/slack", Format: FormatSlack},
		{URL: srv.URL + "/ntfy", Format: FormatNtfy},
		{URL: srv.URL + "/only-expired", Events: []string{EventExpired}},
	}, Options{})
	defer n.Close()
	n.Send(EventCreated, session(), "https://fb.example/feedback/x#t=cap")
	for range 2 {
		r := next(t, got)
		switch {
		case strings.HasPrefix(r.header.Get("Content-Type"), "application/json"):
			var m map[string]string
			if err := json.Unmarshal(r.body, &m); err != nil || !strings.Contains(m["text"], "Deploy?") || !strings.Contains(m["text"], "https://fb.example/feedback/x#t=cap") {
				t.Fatalf("slack body %s", r.body)
			}
		default:
			if string(r.body) != "Deploy?" || r.header.Get("Click") != "https://fb.example/feedback/x#t=cap" || r.header.Get("Title") == "" {
				t.Fatalf("ntfy request %s %v", r.body, r.header)
			}
		}
	}
	select {
	case r := <-got:
		t.Fatalf("a webhook for expired events got %s", r.body)
	default:
	}
}

// TestSendNeverBlocks: with the receiver stuck and the queue full, Send
// still returns at once (the event is dropped and logged).
func TestSendNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	n := New([]Webhook{{URL: srv.URL}}, Options{Delivery: Delivery{QueueSize: 2}})
	defer n.Close()
	for range 50 {
		n.Send(EventCreated, session(), "")
	}
}

// TestReceiverDown: a receiver that refuses connections is retried up to
// the attempt limit, in the background; Send itself never waits.
func TestReceiverDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	var waits atomic.Int32
	n := New([]Webhook{{URL: url}}, Options{Delivery: Delivery{MaxAttempts: 4, Sleep: func(context.Context, time.Duration) { waits.Add(1) }}})
	n.Send(EventCreated, session(), "")
	deadline := time.Now().Add(10 * time.Second)
	for waits.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	n.Close()
	if waits.Load() != 3 {
		t.Fatalf("%d retries after refused connections, want 3 (4 attempts)", waits.Load())
	}
}
