package mcpfeedback

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
)

// mcpPool holds the MCP server of each store across reloads. A legacy SSE
// client keeps its stream on the old configuration's handler while its
// POSTs reach the new one, and Streamable HTTP sessions carry on from one
// configuration to the next; both work only if the MCP sessions live here
// rather than in a handler. The key is the store's, so configurations that
// share sessions share MCP sessions too, and nothing else does.
var mcpPool = caddy.NewUsagePool()

type pooledMCP struct{ *handlers.MCP }

// Destruct ends every MCP session once no configuration uses them.
func (p pooledMCP) Destruct() error {
	p.Close()
	return nil
}

// mcpShutdownWait bounds how long a process exit waits for waiting tool
// calls to send their "server restarting" results.
const mcpShutdownWait = 3 * time.Second

// provisionMCP joins (or starts) the pooled MCP server and arranges for its
// streams to end when the process exits.
func (h *Handler) provisionMCP(ctx caddy.Context) error {
	switch h.Elicitation {
	case "":
		h.Elicitation = handlers.ElicitationURL
	case handlers.ElicitationOff, handlers.ElicitationURL, handlers.ElicitationForm:
	default:
		return fmt.Errorf("elicitation must be off, url or form, not %q", h.Elicitation)
	}
	key := "mcp:" + h.poolKey
	logger, obs := h.logger, h.shared.life
	v, _, err := mcpPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooledMCP{handlers.NewMCP(handlers.MCPOptions{Logger: logger, Observer: obs})}, nil
	})
	if err != nil {
		return fmt.Errorf("starting the MCP server: %w", err)
	}
	h.mcp, h.mcpKey = v.(pooledMCP).MCP, key

	var allowed []string
	if pub := strings.TrimRight(caddy.NewReplacer().ReplaceKnown(h.PublicURL, ""), "/"); pub != "" {
		if u, err := url.Parse(pub); err == nil && u.Host != "" {
			allowed = append(allowed, strings.ToLower(u.Scheme+"://"+u.Host))
		}
	}
	for _, o := range h.AllowedOrigins {
		if canon, err := handlers.CanonicalOrigin(o); err == nil {
			allowed = append(allowed, canon)
		}
	}
	h.mcpConfig = handlers.MCPConfig{Elicitation: h.Elicitation, Prefix: strippedPrefix, AllowedOrigins: allowed,
		MaxSessionsPerSubject: h.MCPMaxSessionsPerSubject}

	// On a reload the streams stay: the next configuration serves them. On
	// exit they must end, or Caddy waits for them.
	m := h.mcp
	h.stopHooks = append(h.stopHooks, func(exiting bool) {
		if exiting {
			ctx, cancel := context.WithTimeout(context.Background(), mcpShutdownWait)
			defer cancel()
			m.Shutdown(ctx)
		}
	})
	return nil
}

// releaseMCP lets go of the pooled MCP server (from Cleanup).
func (h *Handler) releaseMCP() error {
	if h.mcpKey == "" {
		return nil
	}
	key := h.mcpKey
	h.mcpKey, h.mcp = "", nil
	if _, err := mcpPool.Delete(key); err != nil {
		return fmt.Errorf("releasing the MCP server: %w", err)
	}
	return nil
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
