package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pagesec"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/ui"
)

// authRequest is a checked authorization request.
type authRequest struct {
	ClientID    string   `json:"client_id"`
	ClientName  string   `json:"client_name"`
	RedirectURI string   `json:"redirect_uri"`
	State       string   `json:"state,omitempty"`
	Challenge   string   `json:"code_challenge"`
	Resource    string   `json:"resource"`
	Scope       []string `json:"scope"`
	// ClientDigest changes when the client's name or redirect URIs do: a
	// remembered consent then no longer applies.
	ClientDigest string `json:"client_digest"`
}

// pending is an open consent page: the request and who saw it, under the
// page's CSRF token (single use).
type pending struct {
	Request authRequest `json:"request"`
	Sub     string      `json:"sub"`
	Name    string      `json:"name,omitempty"`
	// Consents: a revocation page, not a consent page.
	Consents bool `json:"consents,omitempty"`
}

// consent is a person's remembered "yes" to a client.
type consent struct {
	ClientID     string    `json:"client_id"`
	ClientName   string    `json:"client_name"`
	Scope        []string  `json:"scope"`
	ClientDigest string    `json:"client_digest"`
	Granted      time.Time `json:"granted"`
}

// codeRecord is what an authorization code stands for.
type codeRecord struct {
	authRequest
	Sub     string    `json:"sub"`
	Name    string    `json:"name,omitempty"`
	Expires time.Time `json:"expires"`
}

// parseScope checks a scope parameter; empty means DefaultScopes.
// offline_access is dropped: refresh tokens are always issued, and the
// MCP spec lets clients ask for it.
func parseScope(raw string) ([]string, error) {
	var out []string
	for _, sc := range strings.Fields(raw) {
		if sc == "offline_access" {
			continue
		}
		if !slices.Contains(auth.Scopes, sc) {
			return nil, fmt.Errorf("scope %q is not offered here; the scopes are %s", truncate(sc, 40), strings.Join(auth.Scopes, " "))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return slices.Clone(DefaultScopes), nil
	}
	slices.Sort(out)
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// checkResource checks an RFC 8707 resource: this site (the issuer) or a
// URL under it. Empty means the issuer itself.
func (s *Server) checkResource(raw string) (string, bool) {
	if raw == "" {
		return s.cfg.Issuer, true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Fragment != "" || u.RawQuery != "" || strings.Contains(raw, "#") {
		return "", false
	}
	trimmed := strings.TrimRight(raw, "/")
	if trimmed == s.cfg.Issuer || strings.HasPrefix(trimmed, s.cfg.Issuer+"/") {
		for _, seg := range strings.Split(u.Path, "/") {
			if seg == "." || seg == ".." {
				return "", false
			}
		}
		return raw, true
	}
	return "", false
}

// clientDigest summarises what the person consented to about a client.
func clientDigest(c *Client) string {
	uris := slices.Clone(c.RedirectURIs)
	slices.Sort(uris)
	sum := sha256.Sum256([]byte(c.Name + "\n" + strings.Join(uris, "\n")))
	return hex.EncodeToString(sum[:12])
}

// authorize handles /oauth/authorize: GET starts a flow, POST is the
// consent page's decision.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		s.decide(w, r)
		return
	}
	ctx, cancel := storeCtx(r)
	defer cancel()
	q := r.URL.Query()
	// Until client_id and redirect_uri are known good, every error is
	// shown here: redirecting to an unchecked URI is an open redirect.
	for _, k := range []string{"client_id", "redirect_uri"} {
		if len(q[k]) > 1 {
			s.errorPage(w, r, http.StatusBadRequest, k+" is given more than once")
			return
		}
	}
	c, err := s.client(ctx, q.Get("client_id"))
	if err != nil {
		var ce *errClient
		if errors.As(err, &ce) {
			s.errorPage(w, r, http.StatusBadRequest, ce.msg)
			return
		}
		s.log.Error("oauth: looking up a client failed", zap.Error(err))
		s.errorPage(w, r, http.StatusServiceUnavailable, "the server cannot reach its store; try again in a moment")
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		if len(c.RedirectURIs) != 1 {
			s.errorPage(w, r, http.StatusBadRequest, "redirect_uri is missing, and this client has more than one registered")
			return
		}
		redirect = c.RedirectURIs[0]
	}
	redirect, ok := matchRedirect(c, redirect)
	if !ok {
		s.errorPage(w, r, http.StatusBadRequest, "redirect_uri is not one this client registered")
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) { s.redirectError(w, r, redirect, state, code, desc) }
	for k, v := range q {
		if len(v) > 1 {
			fail("invalid_request", k+" is given more than once")
			return
		}
	}
	if len(state) > 1024 {
		fail("invalid_request", "state is longer than 1024 characters")
		return
	}
	if rt := q.Get("response_type"); rt != "code" {
		if rt == "" {
			fail("invalid_request", "response_type is missing; it must be code")
		} else {
			fail("unsupported_response_type", "only response_type=code is supported")
		}
		return
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		fail("invalid_request", "only response_mode=query is supported")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "":
		fail("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
		return
	case method != "S256":
		fail("invalid_request", "code_challenge_method must be S256 (plain and others are refused)")
		return
	case !validChallenge(challenge):
		fail("invalid_request", "code_challenge must be 43 base64url characters (the S256 of the verifier)")
		return
	}
	resource, ok := s.checkResource(q.Get("resource"))
	if !ok {
		fail("invalid_target", "resource must be this server ("+s.cfg.Issuer+" or a URL under it)")
		return
	}
	scope, err := parseScope(q.Get("scope"))
	if err != nil {
		fail("invalid_scope", err.Error())
		return
	}
	req := authRequest{ClientID: c.ID, ClientName: c.Name, RedirectURI: redirect, State: state, Challenge: challenge,
		Resource: resource, Scope: scope, ClientDigest: clientDigest(c)}

	person, err := s.cfg.Login.Person(r)
	switch {
	case errors.Is(err, identity.ErrNotSignedIn):
		s.cfg.Login.SignIn(w, r, s.sitePath("/oauth/authorize")+"?"+r.URL.RawQuery)
		return
	case err != nil:
		s.log.Error("oauth: checking the sign-in failed", zap.Error(err))
		s.errorPage(w, r, http.StatusServiceUnavailable, "your sign-in could not be checked; try again in a moment")
		return
	}
	var prior consent
	err = s.loadJSON(ctx, keyConsent(person.ID, c.ID), &prior)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("oauth: reading a consent failed", zap.Error(err))
		fail("temporarily_unavailable", "the server cannot reach its store; try again")
		return
	}
	if err == nil && prior.ClientDigest == req.ClientDigest && subset(req.Scope, prior.Scope) {
		s.issueCode(w, r, ctx, req, person, http.StatusFound)
		return
	}
	csrf := secret("")
	if err := s.putJSON(ctx, keyPending(csrf), pending{Request: req, Sub: person.ID, Name: person.Name}, PendingTTL); err != nil {
		s.log.Error("oauth: storing a consent request failed", zap.Error(err))
		fail("temporarily_unavailable", "the server cannot reach its store; try again")
		return
	}
	s.renderConsent(w, r, c, req, person, csrf)
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func validChallenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil
}

// decide handles the consent page's POST: approve or deny, with the
// page's single-use CSRF token, from this site only, by the person the
// page was shown to.
func (s *Server) decide(w http.ResponseWriter, r *http.Request) {
	if err := s.cop.Check(r); err != nil {
		s.errorPage(w, r, http.StatusForbidden, "a decision from another site is refused; open the sign-in again from your app")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "the form could not be read")
		return
	}
	csrf := r.PostForm.Get("csrf")
	if csrf == "" || len(csrf) > 64 {
		s.errorPage(w, r, http.StatusForbidden, "the form's security token is missing; open the sign-in again from your app")
		return
	}
	ctx, cancel := storeCtx(r)
	defer cancel()
	var p pending
	switch err := s.takeJSON(ctx, keyPending(csrf), &p); {
	case errors.Is(err, store.ErrNotFound):
		s.errorPage(w, r, http.StatusBadRequest, "this page has expired or was already used; start again from your app")
		return
	case err != nil:
		s.log.Error("oauth: reading a consent request failed", zap.Error(err))
		s.errorPage(w, r, http.StatusServiceUnavailable, "the server cannot reach its store; try again in a moment")
		return
	}
	person, err := s.cfg.Login.Person(r)
	if err != nil || person.ID != p.Sub {
		s.errorPage(w, r, http.StatusForbidden, "you are not signed in as the person this page was shown to; start again from your app")
		return
	}
	if p.Consents {
		s.revokeConsent(w, r, ctx, person, r.PostForm.Get("client_id"))
		return
	}
	req := p.Request
	switch r.PostForm.Get("decision") {
	case "approve":
	case "deny":
		s.redirectError(w, r, req.RedirectURI, req.State, "access_denied", "the person declined")
		return
	default:
		s.errorPage(w, r, http.StatusBadRequest, "decision must be approve or deny")
		return
	}
	now := s.cfg.Now()
	cons := consent{ClientID: req.ClientID, ClientName: req.ClientName, Scope: req.Scope, ClientDigest: req.ClientDigest, Granted: now}
	if err := s.putJSON(ctx, keyConsent(person.ID, req.ClientID), cons, ConsentTTL); err != nil {
		s.log.Error("oauth: storing a consent failed", zap.Error(err))
		s.redirectError(w, r, req.RedirectURI, req.State, "temporarily_unavailable", "the server cannot reach its store; try again")
		return
	}
	if err := s.kv.AddMember(ctx, keyConsents(person.ID), req.ClientID, now.Add(ConsentTTL)); err != nil {
		s.log.Warn("oauth: listing a consent failed", zap.Error(err))
	}
	s.issueCode(w, r, ctx, req, person, http.StatusSeeOther)
}

// issueCode stores a code for req and sends the browser back with it.
func (s *Server) issueCode(w http.ResponseWriter, r *http.Request, ctx context.Context, req authRequest, person identity.Person, status int) {
	code := secret("")
	rec := codeRecord{authRequest: req, Sub: person.ID, Name: person.Name, Expires: s.cfg.Now().Add(CodeTTL)}
	if err := s.putJSON(ctx, keyCode(code), rec, CodeTTL); err != nil {
		s.log.Error("oauth: storing a code failed", zap.Error(err))
		s.redirectError(w, r, req.RedirectURI, req.State, "temporarily_unavailable", "the server cannot reach its store; try again")
		return
	}
	s.log.Info("oauth: authorization granted", zap.String("client_id", req.ClientID), zap.String("sub", person.ID),
		zap.Strings("scope", req.Scope))
	s.redirect(w, r, req.RedirectURI, status, url.Values{"code": {code}}, req.State)
}

// redirectError sends an RFC 6749 §4.1.2.1 error to a checked redirect URI.
func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, redirect, state, code, desc string) {
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther
	}
	s.redirect(w, r, redirect, status, url.Values{"error": {code}, "error_description": {desc}}, state)
}

// redirect sends the browser to a checked redirect URI with params, the
// state and the issuer (RFC 9207: every response, errors too, so a client
// talking to several servers can tell which one answered).
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, redirect string, status int, params url.Values, state string) {
	u, err := url.Parse(redirect)
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "redirect_uri cannot be parsed")
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	if state != "" {
		q.Set("state", state)
	}
	q.Set("iss", s.cfg.Issuer)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), status)
}

// Pages. They wear the answer page's look (its CSS, languages and
// themes), carry no script, and may not be framed.

func (s *Server) pageData(r *http.Request) ui.OAuthPage {
	q := r.URL.Query()
	return ui.OAuthPage{
		Lang:       ui.NegotiateLang(q.Get("lang"), r.Header.Get("Accept-Language")),
		Theme:      ui.ParseTheme(q.Get("theme")),
		StaticBase: s.cfg.StaticBase,
	}
}

func (s *Server) setPageHeaders(w http.ResponseWriter, r *http.Request, formTarget string) {
	h := w.Header()
	formAction := "'self'"
	if formTarget != "" {
		// The decision's answer redirects to the client; browsers hold
		// that redirect to form-action too.
		formAction += " " + formTarget
	}
	pagesec.Set(h, r, "default-src 'none'; style-src 'self'; img-src data:; form-action "+formAction+
		"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Content-Type", "text/html; charset=utf-8")
}

// cspSource is the CSP source expression that lets a form's redirect
// reach uri: its origin, or its scheme for a private-use scheme.
func cspSource(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		return u.Scheme + "://" + u.Host
	}
	return u.Scheme + ":"
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, detail string) {
	d := s.pageData(r)
	d.Mode = "error"
	d.Detail = detail
	s.setPageHeaders(w, r, "")
	w.WriteHeader(status)
	if err := ui.RenderOAuth(w, d); err != nil {
		s.log.Warn("oauth: rendering a page failed", zap.Error(err))
	}
}

func (s *Server) renderConsent(w http.ResponseWriter, r *http.Request, c *Client, req authRequest, person identity.Person, csrf string) {
	d := s.pageData(r)
	d.Mode = "consent"
	d.CSRF = csrf
	d.Action = s.sitePath("/oauth/authorize")
	d.Person = displayName(person)
	d.ClientName = c.Name
	if d.ClientName == "" {
		d.ClientName = c.ID
	}
	if c.CIMD {
		u, _ := url.Parse(c.ID)
		d.ClientHost = u.Host
	}
	ru, _ := url.Parse(req.RedirectURI)
	d.RedirectHost = ru.Host
	if d.RedirectHost == "" {
		d.RedirectHost = ru.Scheme + ":"
	}
	d.Scopes = req.Scope
	s.setPageHeaders(w, r, cspSource(req.RedirectURI))
	if err := ui.RenderOAuth(w, d); err != nil {
		s.log.Warn("oauth: rendering the consent page failed", zap.Error(err))
	}
}

// displayName shows who is signed in: the name and, since names need not
// be unique, the id that owns the questions.
func displayName(p identity.Person) string {
	if p.Name == "" || p.Name == p.ID {
		return p.ID
	}
	return p.Name + " (" + p.ID + ")"
}
