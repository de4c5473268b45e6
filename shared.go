package mcpfeedback

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// pool holds what must outlive a config reload. On reload Caddy provisions
// the new handler before it cleans up the old one, and the old one's open
// streams keep running after its Cleanup; so the store (and everything a
// live stream touches) is reference-counted here, keyed by the store's
// configuration, and closed only when the last handler using it lets go.
var pool = caddy.NewUsagePool()

// shared is one pooled backend and what hangs off it.
type shared struct {
	store store.Store
	life  *lifecycle
}

// Destruct closes the store once no configuration uses it.
func (s *shared) Destruct() error {
	s.life.close()
	if err := s.store.Close(); err != nil {
		return fmt.Errorf("closing session store: %w", err)
	}
	return nil
}

func acquireShared(b StoreBackend) (*shared, error) {
	v, _, err := pool.LoadOrNew(b.PoolKey(), func() (caddy.Destructor, error) {
		st, err := b.Open()
		if err != nil {
			return nil, err
		}
		return &shared{store: st, life: newLifecycle(st)}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening session store: %w", err)
	}
	return v.(*shared), nil
}

func releaseShared(key string) error {
	if _, err := pool.Delete(key); err != nil {
		return fmt.Errorf("releasing session store: %w", err)
	}
	return nil
}
