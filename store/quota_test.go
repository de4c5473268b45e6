package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// quotaContract: both stores enforce the same per-owner limits.
func quotaContract(t *testing.T, newStore func(t *testing.T) store.Store) {
	admitCreate := func(t *testing.T, st store.Store, owner store.Owner, q store.Quota) (*store.Session, error) {
		t.Helper()
		s := storetest.NewSession(time.Minute)
		s.Owner = owner
		if err := st.(store.Limiter).Admit(t.Context(), owner, s.ID, s.ExpiresAt, q); err != nil {
			return nil, err
		}
		if err := st.Create(t.Context(), s, time.Hour); err != nil {
			t.Fatalf("Create: %v", err)
		}
		return s, nil
	}
	alice, bob := store.Owner{Subject: "alice"}, store.Owner{Subject: "bob"}

	t.Run("creates per minute", func(t *testing.T) {
		st := newStore(t)
		q := store.Quota{CreatesPerMinute: 3}
		for i := range 3 {
			if _, err := admitCreate(t, st, alice, q); err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
		}
		_, err := admitCreate(t, st, alice, q)
		var qe *store.QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, store.ErrQuota) || qe.Limit != "rate" || qe.RetryAfter <= 0 || qe.RetryAfter > time.Minute {
			t.Fatalf("4th create in a minute: %v (%+v)", err, qe)
		}
		if _, err := admitCreate(t, st, bob, q); err != nil {
			t.Fatalf("another owner is limited by alice's creates: %v", err)
		}
	})
	t.Run("pending", func(t *testing.T) {
		st := newStore(t)
		q := store.Quota{MaxPending: 2}
		first, err := admitCreate(t, st, alice, q)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admitCreate(t, st, alice, q); err != nil {
			t.Fatal(err)
		}
		_, err = admitCreate(t, st, alice, q)
		var qe *store.QuotaError
		if !errors.As(err, &qe) || qe.Limit != "pending" || qe.RetryAfter <= 0 {
			t.Fatalf("3rd pending session: %v", err)
		}
		// An answered question no longer counts.
		if _, err := st.Submit(t.Context(), first.ID, store.Answer{FreeText: "done"}); err != nil {
			t.Fatal(err)
		}
		if _, err := admitCreate(t, st, alice, q); err != nil {
			t.Fatalf("after one was answered: %v", err)
		}
		if _, err := admitCreate(t, st, bob, q); err != nil {
			t.Fatalf("bob limited by alice's sessions: %v", err)
		}
	})
	t.Run("zero disables", func(t *testing.T) {
		st := newStore(t)
		for i := range 20 {
			if _, err := admitCreate(t, st, alice, store.Quota{}); err != nil {
				t.Fatalf("create %d without limits: %v", i, err)
			}
		}
	})
}

func TestMemoryQuota(t *testing.T) {
	quotaContract(t, func(t *testing.T) store.Store {
		m := store.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return m
	})
}

func TestRedisQuota(t *testing.T) {
	srv := redistest.Start(t)
	quotaContract(t, func(t *testing.T) store.Store { return newRedis(t, srv, uniquePrefix()) })
}
