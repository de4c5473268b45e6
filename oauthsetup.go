package mcpfeedback

// This file builds the OAuth authorization server (package oauth) that
// `login` turns on, and the keys a site without jwt_secret still needs.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
	"github.com/mcpfeedback/caddy-mcp-feedback/oauth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// newOAuth builds the authorization server when `login` is set; nil
// otherwise. public_url (required by login) is its issuer.
func (h *Handler) newOAuth(cfg *settings, sh *shared) (*oauth.Server, error) {
	if h.login == nil || cfg.login == nil {
		return nil, nil
	}
	if h.OAuthCIMDInsecureLoopbackForTests {
		h.logger.Warn("oauth_cimd_insecure_loopback_for_tests is on: client metadata documents may be fetched over plain http from loopback; never use this in production")
	}
	srv, err := oauth.New(oauth.Config{
		Issuer:                       cfg.publicURL,
		Login:                        h.login,
		KV:                           sh.hub.Records(),
		Logger:                       h.logger.Named("oauth"),
		ClientAddr:                   clientIP,
		RegistrationsPerHour:         h.OAuthRegistrationsPerHour,
		CIMDInsecureLoopbackForTests: h.OAuthCIMDInsecureLoopbackForTests,
		// The consent page wears the answer page's CSS, served under the
		// same mount.
		StaticBase: cfg.login.mount + handlers.StaticPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	return srv, nil
}

// clientIP is the address Caddy attributes a request to: the peer, or
// what trusted_proxies vouch for.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return r.RemoteAddr
}

// jwtSecret is the key the JWT verifier checks HS256 tokens with. A site
// with only `login` has none: agents get opaque tokens from its OAuth
// server, and a random secret nobody knows stands in, so that no JWT is
// ever accepted.
func jwtSecret(cfg *settings) []byte {
	if cfg.secret == "" && cfg.jwksURL == "" && cfg.oidcIssuer == "" {
		return []byte(rand.Text() + rand.Text())
	}
	return []byte(cfg.secret)
}

// sessionKeyTTL is how long the store keeps a generated MCP session-id
// key. When it lapses the next start makes a new one, and open sessions
// initialize again (their 404 tells clients to).
const sessionKeyTTL = 365 * 24 * time.Hour

// sessionKey is the key MCP session ids are signed with, so that every
// instance accepts the sessions of the others: derived from jwt_secret,
// or, on a site without one (`login` only), a random key the first
// instance puts in the shared store and the others read.
func (h *Handler) sessionKey(ctx caddy.Context, cfg *settings, sh *shared) ([]byte, error) {
	if cfg.secret != "" || h.oauth == nil {
		return deriveKey(cfg.secret, "MCP session ids"), nil
	}
	kv := sh.hub.Records()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	const key = "mcp:session-key"
	fresh := []byte(rand.Text() + rand.Text())
	if _, err := kv.PutNew(c, key, fresh, sessionKeyTTL); err != nil {
		return nil, fmt.Errorf("storing the MCP session key: %w", err)
	}
	got, err := kv.Load(c, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errors.New("the MCP session key vanished from the store right after it was stored")
	}
	if err != nil {
		return nil, fmt.Errorf("reading the MCP session key: %w", err)
	}
	return deriveKey(string(got), "MCP session ids"), nil
}
