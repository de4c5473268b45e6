package mcpfeedback

// This file holds the root package's side of `login`: its Caddyfile
// block, its checks, and building the identity.Login that the login
// package implements (which must not import Caddy, so what Caddy knows
// about the request is handed to it as a function).

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/loopback"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"golang.org/x/net/http/httpguts"

	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/login"
)

// Login modes.
const (
	loginCaddy = "caddy"
	loginOIDC  = "oidc"
)

// loginSettings is the resolved `login` block.
type loginSettings struct {
	mode string
	// header: caddy mode with forward_auth's copied header (canonical).
	header string
	// oidc mode
	issuer, clientID, clientSecret, claim string
	scopes, allow                         []string
	sessionTTL                            time.Duration
	insecureLoopback                      bool
	// plainHTTP: public_url is http on loopback, so cookies can be neither
	// Secure nor __Host- (local tests only).
	plainHTTP bool
	// origin is public_url's scheme://host[:port]; mount is its path
	// (without a trailing slash), the prefix of the module's routes.
	origin, mount string
}

// unmarshalLogin reads
//
//	login caddy [header <Name>]
//	login oidc <issuer> {
//		client_id <id>
//		client_secret {env.OIDC_CLIENT_SECRET}
//		scopes <scope>...
//		claim sub|email|preferred_username
//		allow <id>|@<domain>|* ...
//		session_ttl <duration>
//		insecure_loopback_for_tests
//	}
func (h *Handler) unmarshalLogin(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("login needs a mode: `login caddy [header <Name>]` or `login oidc <issuer> { … }`")
	}
	c := &LoginConfig{Mode: d.Val()}
	h.Login = c
	switch c.Mode {
	case loginCaddy:
		args := d.RemainingArgs()
		switch {
		case len(args) == 0:
		case len(args) == 2 && args[0] == "header":
			c.Header = args[1]
		default:
			return d.Errf("login caddy takes nothing, or `header <Name>` (the header forward_auth copies the user into), not %q", strings.Join(args, " "))
		}
		if d.NextBlock(d.Nesting()) {
			return d.Errf("login caddy takes no block")
		}
		return nil
	case loginOIDC:
	default:
		return d.Errf("login mode must be caddy or oidc, not %q", c.Mode)
	}
	if !d.NextArg() {
		return d.Errf("login oidc needs the provider's issuer URL")
	}
	c.Issuer = d.Val()
	if d.NextArg() {
		return d.Errf("login oidc takes one issuer URL; put options in a block")
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("login oidc: %s is set twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "client_id":
			err = oneString(d, &c.ClientID)
		case "client_secret":
			err = oneString(d, &c.ClientSecret)
		case "scopes":
			err = manyStrings(d, &c.Scopes)
		case "claim":
			err = oneString(d, &c.Claim)
		case "allow":
			err = manyStrings(d, &c.Allow)
		case "session_ttl":
			err = oneDuration(d, &c.SessionTTL)
		case "insecure_loopback_for_tests":
			if d.NextArg() {
				return d.Errf("%s takes no value", name)
			}
			c.InsecureLoopbackForTests = true
		default:
			return d.Errf("unknown login oidc option %q (known: client_id, client_secret, scopes, claim, allow, session_ttl, insecure_loopback_for_tests)", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// resolveLogin checks the `login` block against the resolved public URL.
func (h *Handler) resolveLogin(repl *caddy.Replacer, s *settings) error {
	c := h.Login
	if c == nil {
		return nil
	}
	if s.publicURL == "" {
		return errors.New("login needs public_url (e.g. `public_url https://feedback.example.com`): the provider's callback, the sign-in cookies and the authorization server are bound to one stable origin, never to a Host header a request chooses")
	}
	pu, err := url.Parse(s.publicURL)
	if err != nil {
		return fmt.Errorf("public_url: %w", err)
	}
	origin, err := handlers.CanonicalOrigin(pu.Scheme + "://" + pu.Host)
	if err != nil {
		return fmt.Errorf("public_url: %w", err)
	}
	ls := &loginSettings{mode: c.Mode, origin: origin, mount: strings.TrimRight(pu.EscapedPath(), "/")}
	if pu.Scheme == "http" {
		if !loopback.Host(pu.Hostname()) {
			return fmt.Errorf("login needs an https public_url (sign-in cookies are Secure); plain http is only for 127.0.0.1, ::1 or localhost, not %q", pu.Host)
		}
		ls.plainHTTP = true
	}
	d := Defaults().Login
	switch c.Mode {
	case loginCaddy:
		if c.Issuer != "" || c.ClientID != "" || c.ClientSecret != "" || len(c.Scopes) > 0 || c.Claim != "" || len(c.Allow) > 0 || c.SessionTTL != 0 || c.InsecureLoopbackForTests {
			return errors.New("login caddy takes only header; issuer, client_id, client_secret, scopes, claim, allow, session_ttl and insecure_loopback_for_tests belong to login oidc")
		}
		if c.Header != "" && !httpguts.ValidHeaderFieldName(c.Header) {
			return fmt.Errorf("login caddy: %q is not a header name", c.Header)
		}
		ls.header = http.CanonicalHeaderKey(c.Header)
		s.login = ls
		return nil
	case loginOIDC:
	default:
		return fmt.Errorf("login mode must be caddy or oidc, not %q", c.Mode)
	}
	if c.Header != "" {
		return errors.New("login oidc takes no header; that is for login caddy")
	}
	if c.Claim == "" {
		c.Claim = d.Claim
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = d.SessionTTL
	}
	ls.issuer = repl.ReplaceKnown(c.Issuer, "")
	ls.clientID = repl.ReplaceKnown(c.ClientID, "")
	ls.clientSecret = repl.ReplaceKnown(c.ClientSecret, "")
	ls.claim = c.Claim
	ls.sessionTTL = time.Duration(c.SessionTTL)
	ls.insecureLoopback = c.InsecureLoopbackForTests
	iu, err := url.Parse(ls.issuer)
	if err != nil || iu.Host == "" || iu.RawQuery != "" || iu.Fragment != "" || iu.User != nil {
		return fmt.Errorf("login oidc: the issuer %q must be an absolute URL without query, fragment or credentials", ls.issuer)
	}
	switch {
	case iu.Scheme == "https":
	case iu.Scheme == "http" && ls.insecureLoopback && loopback.Host(iu.Hostname()):
	default:
		return fmt.Errorf("login oidc: the issuer %q must be https (plain http only on loopback with insecure_loopback_for_tests)", ls.issuer)
	}
	if ls.clientID == "" {
		return errors.New("login oidc needs client_id: this site's client id at the provider")
	}
	ls.scopes = []string{"openid"}
	for _, sc := range c.Scopes {
		if sc == "" || strings.ContainsFunc(sc, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r > '~' }) {
			return fmt.Errorf("login oidc: %q is not a scope", sc)
		}
		if !slices.Contains(ls.scopes, sc) {
			ls.scopes = append(ls.scopes, sc)
		}
	}
	if len(c.Scopes) == 0 {
		ls.scopes = append(ls.scopes, "email", "profile")
	}
	switch ls.claim {
	case login.ClaimSub, login.ClaimEmail, login.ClaimPreferredUsername:
	default:
		return fmt.Errorf("login oidc: claim must be sub, email or preferred_username, not %q", ls.claim)
	}
	if len(c.Allow) == 0 {
		return errors.New("login oidc needs allow: the ids (or @domains, with claim email) that may sign in, or * for everyone the provider signs in; an OpenID provider such as Google signs in anybody")
	}
	ls.allow = c.Allow
	if _, err := login.NewAllowList(ls.allow, ls.claim); err != nil {
		return fmt.Errorf("login oidc: %w", err)
	}
	if ls.sessionTTL < time.Minute {
		return fmt.Errorf("login oidc: session_ttl %s is shorter than a minute", ls.sessionTTL)
	}
	s.login = ls
	return nil
}

// newLogin builds the configured identity.Login (nil without `login`).
func (h *Handler) newLogin(cfg *settings, sh *shared) (identity.Login, error) {
	ls := cfg.login
	if ls == nil {
		return nil, nil
	}
	switch ls.mode {
	case loginCaddy:
		l, err := login.NewCaddy(login.CaddyOptions{User: caddyUser(ls.header), Origin: ls.origin})
		if err != nil {
			return nil, err
		}
		return l, nil
	default:
		return h.newOIDCLogin(cfg, sh)
	}
}

// caddyUser returns who Caddy's authentication in front of the handler
// says the user is. Without a header that is {http.auth.user.id}: only an
// authentication provider (basic_auth, …) sets it, never the client.
//
// With a header it is what forward_auth's copy_headers put there, and the
// header alone proves nothing: a client can send it. It is believed only
// when forward_auth ran on this request, its authenticator answered 2xx
// ({http.reverse_proxy.status_code}), and the authenticator's own response
// carried the same value under the same name
// ({http.reverse_proxy.header.<Name>}). Caddy 2.11.9 also deletes the
// client's copy before setting the authenticator's; the last check keeps a
// forged header out even on a Caddy that did not, or when the
// authenticator answered without the header. A route without forward_auth
// has neither placeholder, so a forged header is refused there.
func caddyUser(header string) func(*http.Request) string {
	return func(r *http.Request) string {
		repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if !ok {
			return ""
		}
		if header == "" {
			id, _ := repl.GetString("http.auth.user.id")
			return id
		}
		code, _ := repl.Get("http.reverse_proxy.status_code")
		if c, ok := code.(int); !ok || c < 200 || c > 299 {
			return ""
		}
		fromAuthenticator, _ := repl.GetString("http.reverse_proxy.header." + header)
		if vals := r.Header.Values(header); fromAuthenticator != "" && len(vals) == 1 && vals[0] == fromAuthenticator {
			return fromAuthenticator
		}
		return ""
	}
}

// newOIDCLogin builds `login oidc`, its sessions and flow state in the
// shared store's records.
func (h *Handler) newOIDCLogin(cfg *settings, sh *shared) (identity.Login, error) {
	ls := cfg.login
	if ls.insecureLoopback {
		h.logger.Warn("login oidc insecure_loopback_for_tests is on: the OpenID provider may be plain http on loopback; never use this in production")
	}
	allow, err := login.NewAllowList(ls.allow, ls.claim)
	if err != nil {
		return nil, fmt.Errorf("login oidc: %w", err)
	}
	kv := sh.hub.Records()
	l, err := login.NewOIDC(login.OIDCOptions{
		Issuer: ls.issuer, ClientID: ls.clientID, ClientSecret: ls.clientSecret,
		Scopes: ls.scopes, Claim: ls.claim, Allow: allow,
		Sessions: login.NewSessions(kv, ls.sessionTTL, ls.plainHTTP, nil),
		Records:  kv,
		Origin:   ls.origin, Mount: ls.mount, PlainHTTP: ls.plainHTTP,
		ClientAddr: clientIP,
		Client: &http.Client{
			Timeout: 10 * time.Second,
			// The provider is the operator's; its endpoints answer in place.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger: h.logger.Named("login"),
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}
