package handlers

import (
	"strconv"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestQuota: past a limit, create answers 429 with a Retry-After a client
// can wait for, and answering a question frees a pending slot.
func TestQuota(t *testing.T) {
	s := newServiceWith(t, store.NewMemory(), feedback.Config{Quota: store.Quota{MaxPending: 3, CreatesPerMinute: 4}})
	alice := mint(t, "alice")
	first, capTok := create(t, s, alice, `{"message":"1"}`)
	create(t, s, alice, `{"message":"2"}`)
	create(t, s, alice, `{"message":"3"}`)
	w := s.do(t, s.Create, call{method: "POST", body: `{"message":"4"}`, headers: bearer(alice)})
	if w.Code != 429 || errorCode(t, w) != "quota_exceeded" || !strings.Contains(w.Body.String(), "waiting for an answer") {
		t.Fatalf("4th pending: %d %s", w.Code, w.Body)
	}
	if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 301 {
		t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
	}
	// Another subject is not affected.
	create(t, s, mint(t, "bob"), `{"message":"bob"}`)
	// Answering a question frees its slot.
	if w := s.do(t, s.Submit, call{method: "POST", id: first, body: `{"freeText":"x"}`, headers: map[string]string{"X-Feedback-Token": capTok}}); w.Code != 200 {
		t.Fatalf("submit: %d", w.Code)
	}
	create(t, s, alice, `{"message":"4 after one was answered"}`)
	// That was the 4th accepted create this minute: the rate limit is next.
	w = s.do(t, s.Create, call{method: "POST", body: `{"message":"5"}`, headers: bearer(alice)})
	if w.Code != 429 || !strings.Contains(w.Body.String(), "last minute") || w.Header().Get("Retry-After") == "" {
		t.Fatalf("5th create in a minute: %d %s", w.Code, w.Body)
	}
}
