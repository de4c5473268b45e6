package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

type hooked interface {
	store.Store
	OnChange(store.ChangeFunc)
}

// changeContract: every transition is reported once, by the instance that
// made it, with the session as it is afterwards; reads and repeats are not.
func changeContract(t *testing.T, a, b hooked) {
	var mu sync.Mutex
	seen := map[string][]store.Status{}
	record := func(s *store.Session) {
		mu.Lock()
		seen[s.ID] = append(seen[s.ID], s.Status)
		mu.Unlock()
	}
	a.OnChange(record)
	b.OnChange(record)
	ctx := t.Context()
	sub, can, exp := storetest.NewSession(time.Minute), storetest.NewSession(time.Minute), storetest.NewSession(-time.Second)
	for _, s := range []*store.Session{sub, can, exp} {
		if err := a.Create(ctx, s, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the second round repeats each operation: no new reports
		_, _ = b.Submit(ctx, sub.ID, store.Answer{FreeText: "x", Nonce: "n"})
		_, _ = a.Cancel(ctx, can.ID)
		_, _ = b.Get(ctx, exp.ID)
		_, _ = a.Submit(ctx, exp.ID, store.Answer{FreeText: "late"})
	}
	mu.Lock()
	defer mu.Unlock()
	for id, want := range map[string]store.Status{sub.ID: store.StatusSubmitted, can.ID: store.StatusCancelled, exp.ID: store.StatusExpired} {
		if got := seen[id]; len(got) != 1 || got[0] != want {
			t.Errorf("session %s: reported %v, want exactly [%s]", id, got, want)
		}
	}
}

func TestMemoryOnChange(t *testing.T) {
	m := store.NewMemory()
	t.Cleanup(func() { _ = m.Close() })
	changeContract(t, m, m)
}

func TestRedisOnChange(t *testing.T) {
	srv := redistest.Start(t)
	p := uniquePrefix()
	changeContract(t, newRedis(t, srv, p), newRedis(t, srv, p))
}
