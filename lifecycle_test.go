package mcpfeedback

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestLifecycle: a session nobody reads is still expired (and counted and
// logged) after its deadline, by the instance that created it; an answer
// is counted with its time to answer and logged without its text.
func TestLifecycle(t *testing.T) {
	st := store.NewMemory()
	defer st.Close()
	l := newLifecycle(st)
	defer l.close()
	core, logs := observer.New(zap.InfoLevel)
	l.logger.Store(zap.New(core))
	reg := prometheus.NewPedanticRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := registerMetrics(reg); err != nil {
		t.Fatalf("registering twice (a reload) failed: %v", err)
	}
	before := map[string]float64{}
	for _, ev := range []string{"created", "expired", "submitted"} {
		before[ev] = testutil.ToFloat64(metricSessions.WithLabelValues(ev))
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	mk := func(id string, timeout time.Duration) *store.Session {
		s := &store.Session{ID: id, Owner: store.Owner{Subject: "alice"}, Message: "Q", CreatedAt: now.Add(-time.Minute),
			ExpiresAt: now.Add(timeout), Status: store.StatusPending, TokenHash: store.HashToken("t"), AllowFreeText: true}
		if err := st.Create(t.Context(), s, time.Hour); err != nil {
			t.Fatal(err)
		}
		l.Created(s, "https://fb.example/feedback/"+id+"#t=t")
		return s
	}
	mk("00000000-0000-4000-8000-000000000001", -time.Millisecond) // already due: the expirer reads it
	answered := mk("00000000-0000-4000-8000-000000000002", time.Hour)
	if _, err := st.Submit(t.Context(), answered.ID, store.Answer{FreeText: "the secret answer"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(metricSessions.WithLabelValues("expired")) < before["expired"]+1 {
		if time.Now().After(deadline) {
			t.Fatal("the unread session was never expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(metricSessions.WithLabelValues("created")) - before["created"]; got != 2 {
		t.Errorf("created += %v, want 2", got)
	}
	if got := testutil.ToFloat64(metricSessions.WithLabelValues("submitted")) - before["submitted"]; got != 1 {
		t.Errorf("submitted += %v, want 1", got)
	}
	if n := len(logs.FilterMessage("session submitted").All()); n != 1 {
		t.Errorf("%d 'session submitted' log lines, want 1", n)
	}
	if n := len(logs.FilterMessage("session expired").All()); n != 1 {
		t.Errorf("%d 'session expired' log lines, want 1", n)
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && s == "the secret answer" {
				t.Fatalf("log field %s holds the answer text", k)
			}
		}
	}
}
