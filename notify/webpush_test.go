package notify

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	webpush "github.com/SherClockHolmes/webpush-go"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pushtest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

type pushRig struct {
	recv  *pushtest.Receiver
	subs  Subscriptions
	keys  VAPIDKeys
	sleep chan time.Duration
}

// newPushRig starts a local push service and keys for the sender. The
// client given to the Pusher is a plain one: the receiver is on loopback,
// which the production client refuses (tested on its own below).
func newPushRig(t *testing.T) *pushRig {
	t.Helper()
	kv := store.NewMemory()
	t.Cleanup(func() { _ = kv.Close() })
	keys, err := LoadOrCreateVAPID(t.Context(), kv)
	if err != nil {
		t.Fatal(err)
	}
	recv, err := pushtest.NewReceiver(keys.Public)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	return &pushRig{recv: recv, subs: Subscriptions{KV: kv}, keys: keys, sleep: make(chan time.Duration, 100)}
}

func (r *pushRig) pusher(t *testing.T, obs func(string, string, string)) *Pusher {
	t.Helper()
	p := NewPusher(PushOptions{Keys: r.keys, Subject: "mailto:ops@example.com", Subs: r.subs, Delivery: Delivery{Client: &http.Client{Timeout: 30 * time.Second},
		Observe: obs, QueueSize: 10,
		// Retry waits are recorded, not slept: the test checks the wait
		// the sender chose, without spending it.
		Sleep: func(_ context.Context, d time.Duration) { r.sleep <- d }}})
	t.Cleanup(p.Close)
	return p
}

func (r *pushRig) device(t *testing.T, person, name string) *pushtest.Device {
	t.Helper()
	d, err := r.recv.NewDevice(name)
	if err != nil {
		t.Fatal(err)
	}
	var sub PushSubscription
	sub.Endpoint, sub.Keys.P256dh, sub.Keys.Auth = r.recv.Endpoint(d), d.Key, d.Secret
	if err := CheckSubscription(sub, true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.subs.Add(t.Context(), person, sub); err != nil {
		t.Fatal(err)
	}
	return d
}

func job(person, payload string, left time.Duration) PushJob {
	return PushJob{Person: person, Event: EventCreated, SessionID: "s1", Deadline: time.Now().Add(left), Urgency: webpush.UrgencyHigh,
		Topic:   "0123456789abcdef0123456789abcdef",
		Payload: func(context.Context) ([]byte, bool, error) { return []byte(payload), true, nil }}
}

func nextMessage(t *testing.T, r *pushRig) pushtest.Message {
	t.Helper()
	return r.recv.Next(t, 10*time.Second)
}

// TestPushDecryptsWithVAPID: every device of the person gets the payload,
// encrypted to its own keys, signed with the server's VAPID key, with TTL
// = the time the question has left, Urgency high and the question's topic.
func TestPushDecryptsWithVAPID(t *testing.T) {
	r := newPushRig(t)
	r.device(t, "alice", "phone")
	r.device(t, "alice", "laptop")
	r.device(t, "bob", "bobs-phone")
	p := r.pusher(t, nil)
	payload := `{"type":"question","title":"Deploy? 部署？"}`
	p.Send(job("alice", payload, 5*time.Minute))
	got := map[string]bool{}
	for range 2 {
		m := nextMessage(t, r)
		got[m.Device] = true
		if string(m.Plain) != payload {
			t.Errorf("%s decrypted %q, want %q", m.Device, m.Plain, payload)
		}
		if m.TTL < 290 || m.TTL > 300 {
			t.Errorf("TTL %d, want the ~300 s the question has left", m.TTL)
		}
		if m.Urgency != "high" || m.Topic != "0123456789abcdef0123456789abcdef" || m.Subject != "mailto:ops@example.com" {
			t.Errorf("urgency %q topic %q subject %q", m.Urgency, m.Topic, m.Subject)
		}
	}
	if !got["phone"] || !got["laptop"] {
		t.Fatalf("devices reached: %v", got)
	}
	select {
	case m := <-r.recv.Messages:
		t.Fatalf("bob's device got alice's message: %+v", m)
	default:
	}
}

// TestPushGoneDropsSubscription: a 404 or 410 from the push service means
// the browser unsubscribed; the subscription is deleted and never retried.
func TestPushGoneDropsSubscription(t *testing.T) {
	for _, status := range []int{http.StatusGone, http.StatusNotFound} {
		r := newPushRig(t)
		r.device(t, "alice", "old")
		kept := r.device(t, "alice", "new")
		r.recv.Respond(func(dev string, _ int) (int, http.Header) {
			if dev == "old" {
				return status, nil
			}
			return 0, nil
		})
		obs, outcomes := observed()
		p := r.pusher(t, obs)
		p.Send(job("alice", "hi", time.Minute))
		for range 2 {
			nextOutcome(t, outcomes)
		}
		subs, err := r.subs.List(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(subs) != 1 {
			t.Fatalf("status %d: %d subscriptions left, want 1", status, len(subs))
		}
		for _, s := range subs {
			if s.Endpoint != r.recv.Endpoint(kept) {
				t.Fatalf("status %d: kept the wrong subscription", status)
			}
		}
		if len(r.sleep) != 0 {
			t.Fatalf("status %d was retried", status)
		}
	}
}

// TestPushRetryAfterHonoured: 429 with Retry-After waits that long (not the
// backoff), 503 backs off, then the message is delivered.
func TestPushRetryAfterHonoured(t *testing.T) {
	r := newPushRig(t)
	r.device(t, "alice", "phone")
	r.recv.Respond(func(_ string, n int) (int, http.Header) {
		switch n {
		case 1:
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}}
		case 2:
			return http.StatusServiceUnavailable, nil
		}
		return 0, nil
	})
	p := r.pusher(t, nil)
	p.Send(job("alice", "after the wait", time.Hour))
	if m := nextMessage(t, r); string(m.Plain) != "after the wait" {
		t.Fatalf("got %q", m.Plain)
	}
	if d := <-r.sleep; d != 7*time.Second {
		t.Fatalf("after 429 Retry-After: 7 the sender waited %v", d)
	}
	if d := <-r.sleep; d < 2*time.Second || d > 3*time.Second {
		t.Fatalf("after 503 (second attempt) the sender waited %v, want the second backoff step (2–3 s)", d)
	}
}

// TestPushHangingReceiverNeverBlocksSend: with the push service hanging
// and every delivery slot taken, Send still returns at once: the queue is
// bounded and drops its oldest job.
func TestPushHangingReceiverNeverBlocksSend(t *testing.T) {
	r := newPushRig(t)
	r.device(t, "alice", "phone")
	release := make(chan struct{})
	r.recv.Respond(func(string, int) (int, http.Header) { <-release; return 0, nil })
	obs, outcomes := observed()
	p := r.pusher(t, obs)
	defer close(release) // before p.Close (cleanup), so the deliveries end
	for range 100 {      // 10 fit the queue; most of the rest must be dropped
		p.Send(job("alice", "x", time.Hour))
	}
	if o := nextOutcome(t, outcomes); o.outcome != OutcomeDropped {
		t.Fatalf("first outcome %+v, want a dropped job", o)
	}
}

// TestPushFanOut100: one job reaches 100 devices, each decrypting its own.
func TestPushFanOut100(t *testing.T) {
	r := newPushRig(t)
	for i := range 100 {
		r.device(t, "alice", fmt.Sprintf("device-%d", i))
	}
	p := r.pusher(t, nil)
	p.Send(job("alice", "all", time.Hour))
	seen := map[string]bool{}
	for range 100 {
		seen[nextMessage(t, r).Device] = true
	}
	if len(seen) != 100 {
		t.Fatalf("%d distinct devices", len(seen))
	}
}

// BenchmarkPushFanOut100 measures one job to 100 devices on loopback:
// encryption, VAPID signing and 100 HTTP requests.
func BenchmarkPushFanOut100(b *testing.B) {
	kv := store.NewMemory()
	defer kv.Close()
	keys, _ := LoadOrCreateVAPID(context.Background(), kv)
	recv, _ := pushtest.NewReceiver(keys.Public)
	defer recv.Close()
	subs := Subscriptions{KV: kv}
	for range 100 {
		d, _ := recv.NewDevice("d")
		var sub PushSubscription
		sub.Endpoint, sub.Keys.P256dh, sub.Keys.Auth = recv.Endpoint(d), d.Key, d.Secret
		if _, err := subs.Add(context.Background(), "alice", sub); err != nil {
			b.Fatal(err)
		}
	}
	p := NewPusher(PushOptions{Keys: keys, Subject: "ops@example.com", Subs: subs, Delivery: Delivery{Client: &http.Client{}}})
	defer p.Close()
	b.ResetTimer()
	for range b.N {
		p.Send(job("alice", `{"type":"question"}`, time.Hour))
		for range 100 {
			if m := <-recv.Messages; m.Err != nil {
				b.Fatal(m.Err)
			}
		}
	}
}

// TestCheckSubscriptionHostile: what a browser (or anyone posting to the
// subscribe endpoint) may send, and what each refusal says.
func TestCheckSubscriptionHostile(t *testing.T) {
	good := func() PushSubscription {
		var s PushSubscription
		s.Endpoint = "https://push.example/abc"
		s.Keys.P256dh = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
		s.Keys.Auth = "tBHItJI5svbpez7KI4CCXg"
		return s
	}
	if err := CheckSubscription(good(), false); err != nil {
		t.Fatalf("a real subscription was refused: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*PushSubscription)
	}{
		{"no endpoint", "endpoint", func(s *PushSubscription) { s.Endpoint = "" }},
		{"http", "https", func(s *PushSubscription) { s.Endpoint = "http://push.example/abc" }},
		{"loopback http without the test switch", "https", func(s *PushSubscription) { s.Endpoint = "http://127.0.0.1:9/abc" }},
		{"file", "endpoint", func(s *PushSubscription) { s.Endpoint = "file:///etc/passwd" }},
		{"credentials", "credentials", func(s *PushSubscription) { s.Endpoint = "https://u:p@push.example/abc" }},
		{"relative", "absolute", func(s *PushSubscription) { s.Endpoint = "/abc" }},
		{"huge", "endpoint", func(s *PushSubscription) { s.Endpoint = "https://push.example/" + strings.Repeat("a", 3000) }},
		{"short key", "p256dh", func(s *PushSubscription) { s.Keys.P256dh = "AAAA" }},
		{"key off the curve", "P-256", func(s *PushSubscription) { s.Keys.P256dh = "B" + strings.Repeat("A", 86) }},
		{"not base64", "p256dh", func(s *PushSubscription) { s.Keys.P256dh = "!!!" }},
		{"short auth", "auth", func(s *PushSubscription) { s.Keys.Auth = "AAAA" }},
		{"no auth", "auth", func(s *PushSubscription) { s.Keys.Auth = "" }},
	} {
		s := good()
		tc.edit(&s)
		err := CheckSubscription(s, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}

// TestPublicClientRefusesLoopback: the production client will not reach
// this machine, whatever endpoint a browser registered.
func TestPublicClientRefusesLoopback(t *testing.T) {
	r := newPushRig(t)
	d := r.device(t, "alice", "phone")
	c := PublicClient(false)
	resp, err := c.Post(r.recv.Endpoint(d), "text/plain", strings.NewReader("x"))
	if err == nil {
		resp.Body.Close()
		t.Fatal("the public client reached 127.0.0.1")
	}
	if !strings.Contains(err.Error(), "non-public address") {
		t.Fatalf("error %v does not say why", err)
	}
	select {
	case <-r.recv.Hits:
		t.Fatal("the receiver was hit")
	default:
	}
}

func TestVAPIDKeptOnceForEveryInstance(t *testing.T) {
	kv := store.NewMemory()
	defer kv.Close()
	var wg sync.WaitGroup
	keys := make([]VAPIDKeys, 4)
	for i := range keys {
		wg.Go(func() {
			var err error
			if keys[i], err = LoadOrCreateVAPID(t.Context(), kv); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if k != keys[0] {
			t.Fatal("instances starting together got different VAPID keys")
		}
	}
	if err := CheckVAPID(keys[0]); err != nil {
		t.Fatal(err)
	}
	other, _ := LoadOrCreateVAPID(t.Context(), store.NewMemory())
	if err := CheckVAPID(VAPIDKeys{Private: keys[0].Private, Public: other.Public}); err == nil {
		t.Fatal("mismatched halves accepted")
	}
}
