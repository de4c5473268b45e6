// Package handlers serves the module's endpoints over plain net/http: the
// REST API, health and resource metadata (api.go), MCP (mcp*.go), the
// answer page and the WebSocket (page.go, ws.go). Nothing here knows about
// Caddy; the root package builds a Service from its configuration and
// routes to it.
package handlers

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Config is everything the handlers need. The root package fills it from
// the Caddy configuration.
type Config struct {
	Store    store.Store
	Verifier *auth.Verifier
	Limits   validate.Limits
	// Retention is how long a session stays readable after its deadline.
	Retention time.Duration
	// Quota bounds each owner's pending sessions and creates per minute,
	// when the store can enforce it (both built-in stores can).
	Quota store.Quota
	// BaseURL returns the public base of answer links for a request, without
	// a trailing slash (e.g. "https://fb.example" or "https://ex.com/prefix").
	BaseURL func(r *http.Request) string
	// Issuer is listed as the authorization server in the resource metadata.
	Issuer string
	// Service names this server in /health.
	Service string
	Logger  *zap.Logger
	// Observer is told about sessions, auth failures and store errors.
	Observer Observer
	// Now is the clock for new sessions; nil means time.Now.
	Now func() time.Time
}

// Service holds the configured handlers. It is safe for concurrent use.
type Service struct {
	cfg Config
	log *zap.Logger
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
	return &Service{cfg: cfg, log: cfg.Logger}
}

// Created is a new session as its creator sees it: the only time the
// capability token exists outside the person's browser.
type Created struct {
	Session     *store.Session
	FeedbackURL string
}

// CreateSession stores a validated question for owner and returns its
// answer link. REST and MCP both come through here.
func (s *Service) CreateSession(ctx context.Context, owner store.Owner, req *validate.CreateRequest, base string) (*Created, error) {
	// rand.Text is 26 base32 characters: 130 bits, URL-safe, never stored.
	token := rand.Text()
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	sess := &store.Session{
		ID:                uuid.NewString(),
		Owner:             owner,
		Message:           req.Message,
		PredefinedOptions: req.PredefinedOptions,
		MultiSelect:       req.MultiSelect,
		AllowFreeText:     req.AllowFreeText,
		Metadata:          req.Metadata,
		CreatedAt:         now,
		ExpiresAt:         now.Add(req.Timeout),
		UpdatedAt:         now,
		Status:            store.StatusPending,
		TokenHash:         store.HashToken(token),
	}
	if sess.PredefinedOptions == nil {
		sess.PredefinedOptions = []string{}
	}
	if lim, ok := s.cfg.Store.(store.Limiter); ok && s.cfg.Quota != (store.Quota{}) {
		if err := lim.Admit(ctx, owner, sess.ID, sess.ExpiresAt, s.cfg.Quota); err != nil {
			return nil, fmt.Errorf("creating session: %w", err)
		}
	}
	if err := s.cfg.Store.Create(ctx, sess, req.Timeout+s.cfg.Retention); err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	link := FeedbackURL(base, sess.ID, token)
	s.cfg.Observer.Created(sess, link)
	return &Created{Session: sess, FeedbackURL: link}, nil
}

// FeedbackURL is the answer link. The token sits in the fragment, which
// browsers never send, so it stays out of every server log and Referer.
func FeedbackURL(base, id, token string) string {
	return strings.TrimRight(base, "/") + "/feedback/" + id + "#t=" + token
}

// SessionFor returns the session if owner may see it; anything else is
// store.ErrNotFound, so existence is never revealed.
func (s *Service) SessionFor(ctx context.Context, owner store.Owner, id string) (*store.Session, error) {
	if !validID(id) {
		return nil, store.ErrNotFound
	}
	sess, err := s.cfg.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if sess.Owner != owner {
		return nil, store.ErrNotFound
	}
	return sess, nil
}

// Limits are the configured session limits.
func (s *Service) Limits() validate.Limits { return s.cfg.Limits }

// Store is the session store.
func (s *Service) Store() store.Store { return s.cfg.Store }

// OwnerOf is the owner recorded for sessions created with claims.
func OwnerOf(c *auth.Claims) store.Owner {
	return store.Owner{Issuer: c.Issuer, Subject: c.Subject}
}
