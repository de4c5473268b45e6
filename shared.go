package mcpfeedback

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
)

// pool holds what must outlive a config reload, one entry per store key.
// On reload Caddy provisions the new handler before it cleans up the old
// one, and the old one's open streams keep running after its Cleanup; so
// the store, its event stream and the MCP sessions on it are
// reference-counted here and closed only when the last handler using them
// lets go. A legacy SSE client keeps its stream on the old configuration's
// handler while its POSTs reach the new one, and Streamable HTTP sessions
// carry on from one configuration to the next: both work because the MCP
// server lives here rather than in a handler.
var pool = caddy.NewUsagePool()

// shared is one pooled store and what hangs off it.
type shared struct {
	key  string
	hub  *feedback.Hub
	life *lifecycle
	mcp  *handlers.MCP
	// unsubTasks ends the MCP task notifier's subscription to the hub.
	unsubTasks func()
}

// Destruct ends every MCP session, then closes the store, once no
// configuration uses them.
func (s *shared) Destruct() error {
	s.unsubTasks()
	s.mcp.Close()
	s.life.close()
	return s.hub.Close()
}

func acquireShared(b StoreBackend, logger *zap.Logger) (*shared, error) {
	key := b.PoolKey()
	v, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		st, err := b.Open()
		if err != nil {
			return nil, err
		}
		hub := feedback.NewHub(st)
		// An inbox announcement lost is an inbox a refresh behind.
		hub.OnAnnounceFailure(func(error) { metricStoreErrors.WithLabelValues("announce").Inc() })
		life := newLifecycle(hub)
		m := handlers.NewMCP(handlers.MCPOptions{Logger: logger, Observer: life})
		return &shared{key: key, hub: hub, life: life, mcp: m,
			unsubTasks: hub.Subscribe(m.TaskEvents(hub.Records()))}, nil
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

// mcpShutdownWait bounds how long a process exit waits for waiting tool
// calls to send their "server restarting" results.
const mcpShutdownWait = 3 * time.Second

// stopMCP is a stop hook: on exit the MCP streams must end, or Caddy waits
// for them; on a reload they stay for the next configuration.
func (s *shared) stopMCP(exiting bool) {
	if !exiting {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), mcpShutdownWait)
	defer cancel()
	s.mcp.Shutdown(ctx)
}

// strippedPrefix is the path prefix a `handle_path` (or `uri strip_prefix`)
// removed before the request reached the module.
func strippedPrefix(r *http.Request) string {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil {
		return ""
	}
	if p := orig.URL.EscapedPath(); strings.HasSuffix(p, r.URL.EscapedPath()) {
		return strings.TrimSuffix(p, r.URL.EscapedPath())
	}
	return ""
}
