package mcpfeedback

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestLifecycle: a session nobody reads is still expired (and counted and
// logged) after its deadline, by the instance that created it; an answer
// is counted with its time to answer and logged without its text.
func TestLifecycle(t *testing.T) {
	hub := feedback.NewHub(store.NewMemory())
	defer hub.Close()
	l := newLifecycle(hub)
	defer l.close()
	core := feedback.NewService(hub, feedback.Config{Retention: time.Hour})
	obs, logs := observer.New(zap.InfoLevel)
	l.logger.Store(zap.New(obs))
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

	ask := func(timeout time.Duration) *store.Session {
		a, err := core.Ask(t.Context(), store.Owner{Subject: "alice"},
			&validate.CreateRequest{Message: "Q", Timeout: timeout, AllowFreeText: true}, "https://fb.example", feedback.Style{})
		if err != nil {
			t.Fatal(err)
		}
		return a.Session
	}
	ask(time.Millisecond) // due at once: the expirer reads it
	answered := ask(time.Hour)
	if _, err := core.Answer(t.Context(), answered, &validate.SubmitRequest{FreeText: "the secret answer"}, feedback.Via{How: feedback.ViaLink}); err != nil {
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
