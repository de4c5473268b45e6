package oauth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/loopback"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Client is a registered or self-described client.
type Client struct {
	ID           string   `json:"client_id"`
	Name         string   `json:"client_name,omitempty"`
	RedirectURIs []string `json:"redirect_uris"`
	// AuthMethod is none, client_secret_basic or client_secret_post.
	AuthMethod string `json:"token_endpoint_auth_method"`
	// SecretHash is the SHA-256 of the secret handed out at registration;
	// the secret itself is never stored.
	SecretHash string `json:"secret_hash,omitempty"`
	// CIMD: the client described itself by a metadata document at ID.
	CIMD bool `json:"cimd,omitempty"`
	// Used: a token was issued to it (a DCR registration then lives long).
	Used bool `json:"used,omitempty"`
}

// errClient is a client_id or redirect_uri that cannot be trusted: the
// authorization endpoint shows it on its own error page, never by a
// redirect (RFC 6749 §4.1.2.1, RFC 9700 §4.11).
type errClient struct{ msg string }

func (e *errClient) Error() string { return e.msg }

func clientErr(format string, a ...any) error { return &errClient{msg: fmt.Sprintf(format, a...)} }

// client looks up client_id: a metadata document when it is an https URL
// (CIMD), else a DCR registration.
func (s *Server) client(ctx context.Context, id string) (*Client, error) {
	if id == "" {
		return nil, clientErr("client_id is missing")
	}
	if len(id) > 512 || strings.ContainsFunc(id, unicode.IsControl) {
		return nil, clientErr("client_id is not one this server knows")
	}
	if strings.HasPrefix(id, "https://") || strings.HasPrefix(id, "http://") {
		return s.cimdClient(ctx, id)
	}
	var c Client
	switch err := s.loadJSON(ctx, keyClient(id), &c); {
	case errors.Is(err, store.ErrNotFound):
		return nil, clientErr("client_id is not registered here (or its registration expired); register again")
	case err != nil:
		return nil, err
	}
	if c.ID != id {
		return nil, clientErr("client_id is not registered here")
	}
	return &c, nil
}

// matchRedirect returns the registered redirect URI that uri matches:
// exactly, or, for an http loopback URI (RFC 8252 §7.3), with any port.
func matchRedirect(c *Client, uri string) (string, bool) {
	if slices.Contains(c.RedirectURIs, uri) {
		return uri, true
	}
	u, err := url.Parse(uri)
	// url.Parse lowers the scheme; "HTTP://" must not pass as "http://".
	if err != nil || !strings.HasPrefix(uri, "http://") || !loopback.Host(u.Hostname()) {
		return "", false
	}
	for _, reg := range c.RedirectURIs {
		ru, err := url.Parse(reg)
		if err != nil || ru.Scheme != "http" || !loopback.Host(ru.Hostname()) {
			continue
		}
		if ru.Hostname() == u.Hostname() && ru.EscapedPath() == u.EscapedPath() && ru.RawQuery == u.RawQuery &&
			u.User == nil && u.Fragment == "" {
			return uri, true
		}
	}
	return "", false
}

// checkRedirectURI is the registration policy for a redirect URI: https;
// http only to loopback (RFC 8252 §7.3); or a private-use scheme named by
// a reverse domain (RFC 8252 §7.1, e.g. cursor://…). Never javascript:,
// data:, file: or anything with a fragment or user info.
func checkRedirectURI(raw string) error {
	if raw == "" || len(raw) > 2000 || strings.ContainsFunc(raw, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
		return errors.New("a redirect URI must be 1–2000 characters without spaces or control characters")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return fmt.Errorf("redirect URI %q is not an absolute URI", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("redirect URI %q must not have a fragment", raw)
	}
	if u.User != nil {
		return fmt.Errorf("redirect URI %q must not carry user info", raw)
	}
	switch scheme := strings.ToLower(u.Scheme); {
	case scheme != u.Scheme:
		return fmt.Errorf("redirect URI %q: write the scheme in lower case", raw)
	case scheme == "https":
		if u.Host == "" {
			return fmt.Errorf("redirect URI %q has no host", raw)
		}
	case scheme == "http":
		if !loopback.Host(u.Hostname()) {
			return fmt.Errorf("redirect URI %q: plain http is allowed only to a loopback address (127.0.0.1, [::1], localhost)", raw)
		}
	case slices.Contains(browserSchemes, scheme):
		return fmt.Errorf("redirect URI %q: the scheme %s: is not a redirect target; use https, http to loopback, or an app's own scheme", raw, scheme)
	default:
		// A private-use scheme opens a native app (RFC 8252 §7.1; Cursor
		// uses cursor://…); PKCE keeps a code caught by another app useless.
	}
	return nil
}

// browserSchemes run or show content in the browser itself, or reach
// other protocols: never a place to send a code.
var browserSchemes = []string{"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "ftp", "ws", "wss",
	"mailto", "tel", "sms", "intent", "chrome", "chrome-extension", "view-source", "jar", "ms-appx", "res"}

// registration is the RFC 7591 request body this server reads.
type registration struct {
	RedirectURIs            []string `json:"redirect_uris"`
	ClientName              string   `json:"client_name"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	Scope                   string   `json:"scope"`
}

// register handles POST /oauth/register (RFC 7591): Dynamic Client
// Registration, the fallback for clients without a metadata document.
// Rate-limited per address; a registration nobody uses expires in a day.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := storeCtx(r)
	defer cancel()
	if mt := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(mt), "application/json") {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "send the client metadata as application/json")
		return
	}
	if ok, err := s.allowRegistration(ctx, s.cfg.ClientAddr(r)); err != nil {
		s.writeTokenError(w, unavailable(fmt.Errorf("register: %w", err)))
		return
	} else if !ok {
		w.Header().Set("Retry-After", "3600")
		writeOAuthError(w, http.StatusTooManyRequests, "slow_down", fmt.Sprintf("at most %d registrations an hour from one address; reuse the client_id you already have", s.cfg.RegistrationsPerHour))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBody))
	if err != nil {
		writeOAuthError(w, http.StatusRequestEntityTooLarge, "invalid_client_metadata", fmt.Sprintf("the client metadata must be at most %d bytes", maxFormBody))
		return
	}
	var reg registration
	if err := json.Unmarshal(body, &reg); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "the body is not a JSON object of client metadata: "+jsonProblem(err))
		return
	}
	c, err := checkRegistration(&reg)
	if err != nil {
		code := "invalid_client_metadata"
		var rerr *redirectErr
		if errors.As(err, &rerr) {
			code = "invalid_redirect_uri"
		}
		writeOAuthError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	c.ID = secret("dcr_")
	var clientSecret string
	if c.AuthMethod != "none" {
		clientSecret = secret("fbs_")
		c.SecretHash = hash(clientSecret)
	}
	if err := s.putJSON(ctx, keyClient(c.ID), c, UnusedRegistrationTTL); err != nil {
		s.writeTokenError(w, unavailable(fmt.Errorf("register: %w", err)))
		return
	}
	s.log.Info("oauth: client registered", zap.String("client_name", c.Name), zap.String("auth_method", c.AuthMethod))
	resp := map[string]any{
		"client_id":                  c.ID,
		"client_id_issued_at":        s.cfg.Now().Unix(),
		"client_name":                c.Name,
		"redirect_uris":              c.RedirectURIs,
		"token_endpoint_auth_method": c.AuthMethod,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
	}
	if clientSecret != "" {
		resp["client_secret"] = clientSecret
		resp["client_secret_expires_at"] = 0
	}
	writeJSON(w, http.StatusCreated, resp)
}

type redirectErr struct{ error }

func checkRegistration(reg *registration) (*Client, error) {
	if len(reg.RedirectURIs) == 0 {
		return nil, &redirectErr{errors.New("redirect_uris is required: at least one")}
	}
	if len(reg.RedirectURIs) > 10 {
		return nil, &redirectErr{errors.New("at most 10 redirect_uris")}
	}
	for _, u := range reg.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return nil, &redirectErr{err}
		}
	}
	name := strings.TrimSpace(reg.ClientName)
	if len([]rune(name)) > 100 || strings.ContainsFunc(name, unicode.IsControl) || hasBidi(name) {
		return nil, errors.New("client_name must be at most 100 characters without control or bidirectional-override characters")
	}
	method := reg.TokenEndpointAuthMethod
	switch method {
	case "":
		method = "none"
	case "none", "client_secret_basic", "client_secret_post":
	default:
		return nil, fmt.Errorf("token_endpoint_auth_method %q is not supported; use none, client_secret_basic or client_secret_post", method)
	}
	for _, g := range reg.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return nil, fmt.Errorf("grant type %q is not supported; this server issues authorization_code and refresh_token", g)
		}
	}
	for _, rt := range reg.ResponseTypes {
		if rt != "code" {
			return nil, fmt.Errorf("response type %q is not supported; only code", rt)
		}
	}
	if _, err := parseScope(reg.Scope); err != nil {
		return nil, err
	}
	return &Client{Name: name, RedirectURIs: slices.Clone(reg.RedirectURIs), AuthMethod: method}, nil
}

// allowRegistration counts a registration from addr against the hourly
// cap, in an expiring set every instance shares.
func (s *Server) allowRegistration(ctx context.Context, addr string) (bool, error) {
	if s.cfg.RegistrationsPerHour < 0 {
		return true, nil
	}
	ok, err := store.Admit(ctx, s.kv, keyRate(addr), secret(""), s.cfg.Now().Add(time.Hour), s.cfg.RegistrationsPerHour)
	if err != nil {
		return false, fmt.Errorf("oauth: counting a registration: %w", err)
	}
	return ok, nil
}

// markUsed keeps a DCR registration that has completed a flow.
func (s *Server) markUsed(ctx context.Context, c *Client) {
	if c.CIMD {
		return
	}
	c.Used = true
	if err := s.putJSON(ctx, keyClient(c.ID), c, UsedRegistrationTTL); err != nil {
		s.log.Warn("oauth: extending a client registration failed", zap.Error(err))
	}
}

// authenticateClient checks the client credentials of a token or revoke
// request (RFC 6749 §2.3): HTTP Basic, client_secret in the body, or none
// for a public client. It returns the client, or an OAuth error code and
// description.
func (s *Server) authenticateClient(ctx context.Context, r *http.Request, form url.Values) (*Client, *tokenError) {
	id, sec, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		sec, err2 = url.QueryUnescape(sec)
		if err1 != nil || err2 != nil {
			return nil, &tokenError{status: 401, code: "invalid_client", desc: "the Basic credentials are not form-encoded", basic: true}
		}
		if f := form.Get("client_id"); f != "" && f != id {
			return nil, &tokenError{status: 400, code: "invalid_request", desc: "client_id in the body differs from the Basic credentials"}
		}
	} else {
		id = form.Get("client_id")
		sec = form.Get("client_secret")
	}
	if id == "" {
		return nil, &tokenError{status: 401, code: "invalid_client", desc: "client_id is missing"}
	}
	c, err := s.client(ctx, id)
	if err != nil {
		var ce *errClient
		if errors.As(err, &ce) {
			return nil, &tokenError{status: 401, code: "invalid_client", desc: ce.msg, basic: basic}
		}
		return nil, &tokenError{status: 503, code: "temporarily_unavailable", desc: "the client could not be looked up; try again", err: err}
	}
	switch {
	case c.AuthMethod == "none":
		if sec != "" {
			return nil, &tokenError{status: 401, code: "invalid_client", desc: "this client is public (token_endpoint_auth_method none) and must not send a secret", basic: basic}
		}
	case basic && c.AuthMethod != "client_secret_basic", !basic && c.AuthMethod != "client_secret_post":
		return nil, &tokenError{status: 401, code: "invalid_client", desc: "authenticate with " + c.AuthMethod + ", as registered", basic: basic}
	case sec == "" || subtle.ConstantTimeCompare([]byte(hash(sec)), []byte(c.SecretHash)) != 1:
		return nil, &tokenError{status: 401, code: "invalid_client", desc: "the client secret is wrong", basic: basic}
	}
	return c, nil
}

func hasBidi(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F
	})
}

// jsonProblem says what is wrong with a JSON body without echoing it.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s has the wrong type (want %s)", te.Field, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	}
	return "invalid JSON"
}
