// Package handlers serves the module's endpoints over plain net/http: the
// REST API, health and resource metadata (api.go), MCP (mcp*.go), the
// answer page and the WebSocket (page.go, ws.go). They are transports over
// package feedback, which owns a question's life; nothing here touches the
// store or knows about Caddy.
package handlers

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Config is everything the transports need. The root package fills it
// from the resolved Caddy configuration.
type Config struct {
	// Core is the question's life: every transport asks, reads, answers and
	// waits through it.
	Core     *feedback.Service
	Verifier *auth.Verifier
	// BaseURL returns the public base of answer links for a request, without
	// a trailing slash (e.g. "https://fb.example" or "https://ex.com/prefix").
	BaseURL func(r *http.Request) string
	// Issuer is listed as the authorization server in the resource metadata.
	Issuer string
	// AuthServers, when set, are listed instead: this site's own
	// authorization server (login). A 401 then also names the scopes to
	// ask it for.
	AuthServers []string
	// Tokens checks the access tokens this site's authorization server
	// issues, beside the JWT verifier; nil when there is none.
	Tokens TokenChecker
	// Service names this server in /health.
	Service string
	Logger  *zap.Logger
	// Observer is told about auth failures, store errors and connections.
	Observer Observer
	// Now is the clock of /health and the page's view; nil means time.Now.
	Now func() time.Time
	// WithholdLink keeps the answer link from the agent: create and
	// interactive_feedback return the session id only (link_to_agent off).
	WithholdLink bool
}

// TokenChecker checks opaque access tokens (package oauth): Owns picks
// them out by their form, Check looks them up and yields the claims a JWT
// would carry, or an auth.Error whose Reason is "store" when the lookup
// failed.
type TokenChecker interface {
	Owns(token string) bool
	Check(ctx context.Context, token string) (*auth.Claims, *auth.Error)
}

// Service holds the configured transports. It is safe for concurrent use.
type Service struct {
	cfg  Config
	core *feedback.Service
	log  *zap.Logger
}

// New builds a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Service == "" {
		cfg.Service = "caddy-mcp-feedback"
	}
	return &Service{cfg: cfg, core: cfg.Core, log: cfg.Logger}
}

// Core is the question's life this Service serves.
func (s *Service) Core() *feedback.Service { return s.core }

// OwnerOf is the owner recorded for questions asked with claims.
func OwnerOf(c *auth.Claims) store.Owner {
	return store.Owner{Issuer: c.Issuer, Subject: c.Subject}
}
