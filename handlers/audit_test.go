package handlers

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// countingStore counts how often the store is asked for a session.
type countingStore struct {
	store.Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, id string) (*store.Session, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

// TestMalformedIDsNeverReachTheStore: anything that is not a canonical
// UUID is answered 404 before the store is asked.
func TestMalformedIDsNeverReachTheStore(t *testing.T) {
	cs := &countingStore{Store: store.NewMemory()}
	s := newService(t, cs)
	alice := mint(t, "alice")
	for _, id := range []string{"../../etc/passwd", "%00", "\x00", strings.Repeat("a", 10<<10), "*", "{x}", "123E4567-E89B-12D3-A456-426614174000"} {
		for name, h := range map[string]http.HandlerFunc{"status": s.Status, "result": s.Result} {
			if w := s.do(t, h, call{method: "GET", id: id, headers: bearer(alice)}); w.Code != 404 {
				t.Errorf("%s of %.20q: %d", name, id, w.Code)
			}
		}
		if w := s.do(t, s.Submit, call{method: "POST", id: id, body: `{"freeText":"x"}`, headers: map[string]string{"X-Feedback-Token": "x"}}); w.Code != 404 {
			t.Errorf("submit to %.20q: %d", id, w.Code)
		}
	}
	if n := cs.gets.Load(); n != 0 {
		t.Fatalf("the store was asked %d times for malformed ids", n)
	}
}

// TestFailedAuthIsLoggedWithoutToken: a failed login is logged with its
// reason and remote address, and the token appears nowhere in the log.
func TestFailedAuthIsLoggedWithoutToken(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	s := newService(t, store.NewMemory())
	s.log = zap.New(core)
	badTok := mint(t, "alice") + "tampered"
	w := s.do(t, s.Create, call{method: "POST", body: `{"message":"Q"}`, headers: bearer(badTok)})
	if w.Code != 401 {
		t.Fatalf("status %d", w.Code)
	}
	entries := logs.FilterMessage("authentication failed").All()
	if len(entries) != 1 {
		t.Fatalf("%d auth-failure log entries, want 1", len(entries))
	}
	fields := entries[0].ContextMap()
	if fields["reason"] != "signature" || fields["remote_addr"] == "" {
		t.Fatalf("log fields %v", fields)
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if str, ok := v.(string); ok && strings.Contains(str, badTok[:40]) {
				t.Fatalf("log field %s contains the token", k)
			}
		}
	}
}
