// Package oauth is the OAuth 2.1 authorization server that lets MCP clients
// (claude.ai, ChatGPT, VS Code, Claude Code, the MCP SDKs) connect to this
// site with nothing configured by hand: RFC 8414 metadata, the
// authorization-code flow with PKCE S256 and the person's consent, Client
// ID Metadata Documents, Dynamic Client Registration (RFC 7591), refresh
// tokens rotated on every use, and revocation (RFC 7009).
//
// Who the person is comes from an identity.Login. Every record (codes,
// grants, tokens, consents, registrations, the CIMD cache) lives in a
// store.KV, so several instances sharing a store act as one. Access tokens
// are opaque random strings kept only as SHA-256 hashes: revoking a grant
// ends its tokens at once on every instance, and there is no signing key
// to manage. Check turns an access token into the same auth.Claims the
// JWT verifier yields, so the transports do not care which kind they got.
//
// The server is written here rather than taken from zitadel/oidc or
// ory/fosite: neither binds the RFC 8707 resource to the authorization
// code, sends the RFC 9207 iss, or fetches client metadata documents, and
// both would need a storage adapter as large as this package's own use of
// the KV.
package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Lifetimes and limits. The code lifetime is the ceiling RFC 9700 §4.2.1
// and the issue set (≤ 60 s); access tokens are short because refresh is
// cheap; refresh tokens rotate, so a family lives as long as it is used.
const (
	CodeTTL    = 60 * time.Second
	AccessTTL  = time.Hour
	RefreshTTL = 30 * 24 * time.Hour
	// ConsentTTL is how long a person's "yes" to a client is remembered.
	ConsentTTL = 90 * 24 * time.Hour
	// PendingTTL is how long a consent page may stay open before its
	// decision is refused (its CSRF token expires).
	PendingTTL = 10 * time.Minute
	// UnusedRegistrationTTL: a DCR client that never completes a flow is
	// forgotten after a day; a used one lives UsedRegistrationTTL past its
	// last token.
	UnusedRegistrationTTL = 24 * time.Hour
	UsedRegistrationTTL   = 180 * 24 * time.Hour
	// DefaultRegistrationsPerHour caps DCR per client address.
	DefaultRegistrationsPerHour = 20

	maxFormBody = 16 << 10
)

// Token prefixes tell this server's opaque tokens from JWTs at a glance
// (a JWT starts with "eyJ"), so a bearer string goes to exactly one
// checker and one kind can never be taken for the other.
const (
	AccessPrefix  = "fbo_"
	refreshPrefix = "fbr_"
)

// DefaultScopes are granted when a client asks for none: create questions
// and read their answers. feedback:answer (answering one's own questions
// over REST) is given only when asked for by name.
var DefaultScopes = []string{auth.ScopeCreate, auth.ScopeRead}

// Config configures a Server.
type Config struct {
	// Issuer is the public URL of the site (public_url), without a
	// trailing slash: the `iss` of every response and the base of every
	// endpoint. It is configuration, never a request's Host.
	Issuer string
	// Login says who the person in the browser is.
	Login identity.Login
	// KV keeps every record.
	KV store.KV
	// Logger; nil is a no-op logger.
	Logger *zap.Logger
	// ClientAddr is the address DCR is rate-limited by (Caddy's client IP,
	// which honours trusted_proxies); nil uses the connection's address.
	ClientAddr func(*http.Request) string
	// RegistrationsPerHour caps DCR per address; 0 is the default, -1 off.
	RegistrationsPerHour int
	// CIMDInsecureLoopbackForTests lets client metadata documents be
	// fetched over plain http from loopback addresses. Tests only.
	CIMDInsecureLoopbackForTests bool
	// StaticBase is the URL path of the answer page's CSS (the consent
	// page wears the same look), e.g. "/feedback-static/" under the mount.
	StaticBase string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the authorization server. It is safe for concurrent use.
type Server struct {
	cfg    Config
	issuer *url.URL
	kv     store.KV
	log    *zap.Logger
	cimd   *fetcher
	cop    *http.CrossOriginProtection
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Login == nil {
		return nil, errors.New("oauth: a login is required: the authorization server must know who consents")
	}
	if cfg.KV == nil {
		return nil, errors.New("oauth: a store is required")
	}
	iss, err := url.Parse(cfg.Issuer)
	if err != nil || (iss.Scheme != "https" && iss.Scheme != "http") || iss.Host == "" || iss.RawQuery != "" || iss.Fragment != "" {
		return nil, fmt.Errorf("oauth: the issuer %q must be an absolute http(s) URL without query or fragment (set public_url)", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClientAddr == nil {
		cfg.ClientAddr = remoteHost
	}
	if cfg.RegistrationsPerHour == 0 {
		cfg.RegistrationsPerHour = DefaultRegistrationsPerHour
	}
	s := &Server{cfg: cfg, issuer: iss, kv: cfg.KV, log: cfg.Logger,
		cimd: newFetcher(cfg.CIMDInsecureLoopbackForTests), cop: http.NewCrossOriginProtection()}
	return s, nil
}

// Issuer is the issuer identifier (the public URL).
func (s *Server) Issuer() string { return s.cfg.Issuer }

// Routes are the endpoints, keyed by ServeMux pattern relative to the
// module's mount point. The metadata is also served path-inserted
// (`/.well-known/oauth-authorization-server/<mount path>`, RFC 8414 §3.1),
// which a site mounted under a prefix must route to the handler.
func (s *Server) Routes() map[string]http.Handler {
	md := methods(s.metadata, http.MethodGet, http.MethodHead)
	return map[string]http.Handler{
		"/.well-known/oauth-authorization-server":           md,
		"/.well-known/oauth-authorization-server/{rest...}": md,
		"/oauth/authorize": methods(s.authorize, http.MethodGet, http.MethodPost),
		"/oauth/token":     methods(s.token, http.MethodPost),
		"/oauth/revoke":    methods(s.revoke, http.MethodPost),
		"/oauth/register":  methods(s.register, http.MethodPost),
		"/oauth/consents":  methods(s.consents, http.MethodGet, http.MethodPost),
	}
}

// endpoint is the public URL of one of this server's paths.
func (s *Server) endpoint(path string) string { return s.cfg.Issuer + path }

// sitePath is the path of one of this server's endpoints from the site's
// root (the issuer's path, then path): what identity.Login.SignIn takes.
func (s *Server) sitePath(path string) string {
	return strings.TrimRight(s.issuer.EscapedPath(), "/") + path
}

// Scopes are the scopes this server grants.
func Scopes() []string { return auth.Scopes }

// methods answers 405 with Allow for any other method.
func methods(h http.HandlerFunc, allowed ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range allowed {
			if r.Method == m {
				h(w, r)
				return
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "this endpoint accepts "+strings.Join(allowed, ", "))
	})
}

// oauthError is the RFC 6749 §5.2 error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, oauthError{Error: code, Description: desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	// Token responses must not be cached (RFC 6749 §5.1); nothing here
	// benefits from caching anyway.
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// secret returns a new random secret with prefix: 128 bits (rand.Text).
func secret(prefix string) string { return prefix + rand.Text() }

// hash is the key a secret is stored under: hex SHA-256. Only hashes are
// stored, so a copy of the store grants nothing.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// shortHash names a person or client inside a key without putting the
// raw value (which may hold spaces or be long) there.
func shortHash(s string) string { return hash(s)[:32] }

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Store keys. Callers namespace KV keys; all of this server's start with
// "oauth:".
func keyClient(id string) string       { return "oauth:client:" + shortHash(id) }
func keyCIMD(id string) string         { return "oauth:cimd:" + shortHash(id) }
func keyCode(code string) string       { return "oauth:code:" + hash(code) }
func keyCodeUsed(code string) string   { return "oauth:code-used:" + hash(code) }
func keyGrant(id string) string        { return "oauth:grant:" + id }
func keyAccess(tok string) string      { return "oauth:at:" + hash(tok) }
func keyRefresh(tok string) string     { return "oauth:rt:" + hash(tok) }
func keyRefreshUsed(tok string) string { return "oauth:rt-used:" + hash(tok) }
func keyPending(csrf string) string    { return "oauth:pending:" + hash(csrf) }
func keyConsent(sub, client string) string {
	return "oauth:consent:" + shortHash(sub) + ":" + shortHash(client)
}
func keyConsents(sub string) string { return "oauth:consents:" + shortHash(sub) }
func keyGrantsOf(sub, client string) string {
	return "oauth:grants:" + shortHash(sub) + ":" + shortHash(client)
}
func keyRate(addr string) string { return "oauth:dcr-rate:" + shortHash(addr) }

// loadJSON loads key into v; store.ErrNotFound passes through.
func (s *Server) loadJSON(ctx context.Context, key string, v any) error {
	b, err := s.kv.Load(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("oauth: decoding %s: %w", strings.SplitN(key, ":", 3)[1], err)
	}
	return nil
}

func (s *Server) putJSON(ctx context.Context, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("oauth: encoding: %w", err)
	}
	if err := s.kv.Put(ctx, key, b, ttl); err != nil {
		return fmt.Errorf("oauth: storing: %w", err)
	}
	return nil
}

func (s *Server) takeJSON(ctx context.Context, key string, v any) error {
	b, err := s.kv.Take(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("oauth: decoding: %w", err)
	}
	return nil
}

// storeCtx bounds a store call made on behalf of a request.
func storeCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 5*time.Second)
}
