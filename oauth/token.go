package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// grant is one authorization: a person let a client act for them. Its
// tokens (the refresh family and every access token) name it, and end
// when it is deleted.
type grant struct {
	ID       string    `json:"id"`
	ClientID string    `json:"client_id"`
	Sub      string    `json:"sub"`
	Name     string    `json:"name,omitempty"`
	Scope    []string  `json:"scope"`
	Resource string    `json:"resource"`
	Created  time.Time `json:"created"`
}

// tokenRecord is an access or refresh token, stored under its hash.
type tokenRecord struct {
	Grant    string    `json:"grant"`
	ClientID string    `json:"client_id"`
	Scope    []string  `json:"scope"`
	Expires  time.Time `json:"expires"`
}

type tokenError struct {
	status     int
	code, desc string
	basic      bool // the client used Basic: answer 401 with a Basic challenge
	err        error
}

func (s *Server) writeTokenError(w http.ResponseWriter, e *tokenError) {
	if e.err != nil {
		s.log.Error("oauth: token endpoint failed", zap.Error(e.err))
	}
	if e.status == http.StatusUnauthorized && e.basic {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
	}
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeOAuthError(w, e.status, e.code, e.desc)
}

// readForm reads an application/x-www-form-urlencoded body (never the
// query: credentials must not travel in URLs) and refuses repeated
// parameters (RFC 6749 §3.2).
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, *tokenError) {
	mt := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("Content-Type"), ";")[0]))
	if mt != "application/x-www-form-urlencoded" {
		return nil, &tokenError{status: 400, code: "invalid_request", desc: "send the parameters as application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		return nil, &tokenError{status: 400, code: "invalid_request", desc: fmt.Sprintf("the form could not be read (at most %d bytes of form encoding)", maxFormBody)}
	}
	if len(r.URL.Query()) > 0 {
		return nil, &tokenError{status: 400, code: "invalid_request", desc: "parameters go in the body, not the URL"}
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return nil, &tokenError{status: 400, code: "invalid_request", desc: k + " is given more than once"}
		}
	}
	return r.PostForm, nil
}

// clientForm reads the form of a token or revoke request and the client
// it authenticates (RFC 6749 §2.3).
func (s *Server) clientForm(ctx context.Context, w http.ResponseWriter, r *http.Request) (url.Values, *Client, *tokenError) {
	form, terr := readForm(w, r)
	if terr != nil {
		return nil, nil, terr
	}
	c, terr := s.authenticateClient(ctx, r, form)
	return form, c, terr
}

// token handles POST /oauth/token.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := storeCtx(r)
	defer cancel()
	form, c, terr := s.clientForm(ctx, w, r)
	if terr != nil {
		s.writeTokenError(w, terr)
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "authorization_code":
		s.exchangeCode(w, ctx, c, form)
	case "refresh_token":
		s.refresh(w, ctx, c, form)
	case "":
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_request", desc: "grant_type is missing"})
	default:
		s.writeTokenError(w, &tokenError{status: 400, code: "unsupported_grant_type", desc: "grant_type must be authorization_code or refresh_token"})
	}
}

func invalidGrant(desc string) *tokenError {
	return &tokenError{status: 400, code: "invalid_grant", desc: desc}
}

func unavailable(err error) *tokenError {
	return &tokenError{status: 503, code: "temporarily_unavailable", desc: "the server cannot reach its store; try again in a moment", err: err}
}

// exchangeCode redeems an authorization code: once, within CodeTTL, by the
// client it was issued to, with its redirect URI and PKCE verifier. A code
// redeemed twice was stolen, or the client is broken: its grant is revoked
// (RFC 9700 §4.5, RFC 6749 §4.1.2).
func (s *Server) exchangeCode(w http.ResponseWriter, ctx context.Context, c *Client, form url.Values) {
	code, verifier := form.Get("code"), form.Get("code_verifier")
	if code == "" {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_request", desc: "code is missing"})
		return
	}
	if verifier == "" {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_request", desc: "code_verifier is missing: PKCE is required"})
		return
	}
	if !validVerifier(verifier) {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_request", desc: "code_verifier must be 43–128 characters of A–Z a–z 0–9 - . _ ~"})
		return
	}
	if len(code) > 128 {
		s.writeTokenError(w, invalidGrant("the code is not valid"))
		return
	}
	var rec codeRecord
	switch err := s.takeJSON(ctx, keyCode(code), &rec); {
	case errors.Is(err, store.ErrNotFound):
		if g, lerr := s.kv.Load(ctx, keyCodeUsed(code)); lerr == nil {
			s.revokeGrant(ctx, string(g), "authorization code reused")
			s.writeTokenError(w, invalidGrant("the code was already used; every token issued for it is revoked"))
			return
		}
		s.writeTokenError(w, invalidGrant("the code is not valid (unknown, expired or already used)"))
		return
	case err != nil:
		s.writeTokenError(w, unavailable(err))
		return
	}
	now := s.cfg.Now()
	switch {
	case now.After(rec.Expires):
		s.writeTokenError(w, invalidGrant("the code has expired"))
		return
	case rec.ClientID != c.ID:
		s.writeTokenError(w, invalidGrant("the code was issued to another client"))
		return
	case form.Get("redirect_uri") != rec.RedirectURI:
		s.writeTokenError(w, invalidGrant("redirect_uri differs from the one in the authorization request"))
		return
	case !pkceMatches(verifier, rec.Challenge):
		s.writeTokenError(w, invalidGrant("code_verifier does not match the code_challenge"))
		return
	}
	if res := form.Get("resource"); res != "" && !sameResource(res, rec.Resource) {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_target", desc: "resource differs from the one in the authorization request"})
		return
	}
	g := grant{ID: secret(""), ClientID: c.ID, Sub: rec.Sub, Name: rec.Name, Scope: rec.Scope, Resource: rec.Resource, Created: now}
	if err := s.putJSON(ctx, keyGrant(g.ID), g, RefreshTTL); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	if err := s.kv.Put(ctx, keyCodeUsed(code), []byte(g.ID), 10*time.Minute); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	if err := s.listGrant(ctx, &g, now); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	s.markUsed(ctx, c)
	s.issueTokens(w, ctx, &g, g.Scope)
}

// refresh rotates a refresh token: the old one stops working, a new pair
// is issued. An old token used again means two parties hold the family:
// all of it is revoked (RFC 9700 §4.14.2).
func (s *Server) refresh(w http.ResponseWriter, ctx context.Context, c *Client, form url.Values) {
	rt := form.Get("refresh_token")
	if rt == "" {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_request", desc: "refresh_token is missing"})
		return
	}
	if !strings.HasPrefix(rt, refreshPrefix) || len(rt) > 128 {
		s.writeTokenError(w, invalidGrant("the refresh token is not valid"))
		return
	}
	var rec tokenRecord
	switch err := s.loadJSON(ctx, keyRefresh(rt), &rec); {
	case errors.Is(err, store.ErrNotFound):
		s.refreshReused(w, ctx, rt)
		return
	case err != nil:
		s.writeTokenError(w, unavailable(err))
		return
	}
	if rec.ClientID != c.ID {
		// Another client holds this client's refresh token: it leaked.
		s.revokeGrant(ctx, rec.Grant, "refresh token presented by another client")
		s.writeTokenError(w, invalidGrant("the refresh token was issued to another client; its grant is revoked"))
		return
	}
	scope := rec.Scope
	if raw := form.Get("scope"); raw != "" {
		asked, err := parseScope(raw)
		if err != nil || !subset(asked, rec.Scope) {
			s.writeTokenError(w, &tokenError{status: 400, code: "invalid_scope", desc: "a refresh may keep or narrow the granted scope (" + strings.Join(rec.Scope, " ") + "), never widen it"})
			return
		}
		scope = asked
	}
	var g grant
	switch err := s.loadJSON(ctx, keyGrant(rec.Grant), &g); {
	case errors.Is(err, store.ErrNotFound):
		s.writeTokenError(w, invalidGrant("the grant was revoked"))
		return
	case err != nil:
		s.writeTokenError(w, unavailable(err))
		return
	}
	if res := form.Get("resource"); res != "" && !sameResource(res, g.Resource) {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_target", desc: "resource differs from the one this grant was made for"})
		return
	}
	// Take decides between two concurrent uses of the same token.
	if _, err := s.kv.Take(ctx, keyRefresh(rt)); errors.Is(err, store.ErrNotFound) {
		s.refreshReused(w, ctx, rt)
		return
	} else if err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	if err := s.kv.Put(ctx, keyRefreshUsed(rt), []byte(g.ID), RefreshTTL); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	// The grant lives as long as its newest refresh token, and so do the
	// entries by which the person finds and revokes it.
	if err := s.putJSON(ctx, keyGrant(g.ID), g, RefreshTTL); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	if err := s.listGrant(ctx, &g, s.cfg.Now()); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	s.markUsed(ctx, c)
	s.issueTokens(w, ctx, &g, scope)
}

func (s *Server) refreshReused(w http.ResponseWriter, ctx context.Context, rt string) {
	if g, err := s.kv.Load(ctx, keyRefreshUsed(rt)); err == nil {
		s.revokeGrant(ctx, string(g), "refresh token reused")
		s.writeTokenError(w, invalidGrant("the refresh token was already used; the whole grant is revoked, sign in again"))
		return
	}
	s.writeTokenError(w, invalidGrant("the refresh token is not valid (unknown, expired or revoked)"))
}

// issueTokens stores and returns a new access and refresh token.
func (s *Server) issueTokens(w http.ResponseWriter, ctx context.Context, g *grant, scope []string) {
	now := s.cfg.Now()
	// The access token names its grant (not a secret: it grants nothing),
	// so that Check can read the token's record and the grant together.
	at, rt := secret(AccessPrefix+g.ID+"."), secret(refreshPrefix)
	if err := s.putJSON(ctx, keyAccess(at), tokenRecord{Grant: g.ID, ClientID: g.ClientID, Scope: scope, Expires: now.Add(AccessTTL)}, AccessTTL); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	if err := s.putJSON(ctx, keyRefresh(rt), tokenRecord{Grant: g.ID, ClientID: g.ClientID, Scope: scope, Expires: now.Add(RefreshTTL)}, RefreshTTL); err != nil {
		s.writeTokenError(w, unavailable(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  at,
		"token_type":    "Bearer",
		"expires_in":    int(AccessTTL / time.Second),
		"refresh_token": rt,
		"scope":         strings.Join(scope, " "),
	})
}

// listGrant (re)lists g under its person and client for as long as its
// refresh tokens live, which is how revoking a consent finds it, and keeps
// the client on the person's consents page as long: without it a client
// that refreshes for months would drop out of both while its grant works.
// Failing closed: a grant nobody can find cannot be revoked.
func (s *Server) listGrant(ctx context.Context, g *grant, now time.Time) error {
	until := now.Add(RefreshTTL)
	if err := s.kv.AddMember(ctx, keyGrantsOf(g.Sub, g.ClientID), g.ID, until); err != nil {
		return fmt.Errorf("listing grant: %w", err)
	}
	if err := s.kv.AddMember(ctx, keyConsents(g.Sub), g.ClientID, until); err != nil {
		return fmt.Errorf("listing consent: %w", err)
	}
	return nil
}

// revokeGrant ends a grant: its tokens name it, and Check and refresh
// refuse tokens whose grant is gone, on every instance at once.
// It reports a store failure, so that a person or client asking for the
// revocation is not told it happened.
func (s *Server) revokeGrant(ctx context.Context, id, why string) error {
	if id == "" {
		return nil
	}
	var g grant
	_ = s.loadJSON(ctx, keyGrant(id), &g)
	if err := s.kv.Delete(ctx, keyGrant(id)); err != nil {
		s.log.Error("oauth: revoking a grant failed", zap.String("reason", why), zap.Error(err))
		return fmt.Errorf("revoking grant: %w", err)
	}
	if g.Sub != "" {
		_ = s.kv.RemoveMember(ctx, keyGrantsOf(g.Sub, g.ClientID), id)
	}
	s.log.Info("oauth: grant revoked", zap.String("reason", why), zap.String("client_id", g.ClientID), zap.String("sub", g.Sub))
	return nil
}

// revoke handles POST /oauth/revoke (RFC 7009): the token's whole grant
// ends, access tokens included. Unknown tokens get 200 too (§2.2), so the
// endpoint tells nobody which tokens exist.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := storeCtx(r)
	defer cancel()
	form, c, terr := s.clientForm(ctx, w, r)
	if terr != nil {
		s.writeTokenError(w, terr)
		return
	}
	tok := form.Get("token")
	if tok == "" {
		s.writeTokenError(w, &tokenError{status: 400, code: "invalid_request", desc: "token is missing"})
		return
	}
	if len(tok) <= 128 {
		keys := []string{keyAccess(tok), keyRefresh(tok)}
		if form.Get("token_type_hint") == "refresh_token" || strings.HasPrefix(tok, refreshPrefix) {
			keys[0], keys[1] = keys[1], keys[0]
		}
		for _, k := range keys {
			var rec tokenRecord
			err := s.loadJSON(ctx, k, &rec)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				s.writeTokenError(w, unavailable(err))
				return
			}
			// Another client's token is left alone (RFC 7009 §2.1).
			if rec.ClientID == c.ID {
				// RFC 7009 §2.2.1: 503 when it could not be revoked.
				if err := s.kv.Delete(ctx, k); err != nil {
					s.writeTokenError(w, unavailable(err))
					return
				}
				if err := s.revokeGrant(ctx, rec.Grant, "revoked by the client"); err != nil {
					s.writeTokenError(w, unavailable(err))
					return
				}
			}
			break
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// Check verifies an access token of this server for a resource server and
// returns the claims the JWT verifier would: sub = the person, aud = the
// resource, scope, client_id, iss = the issuer. A token for another
// resource, an expired one, or one whose grant was revoked is refused.
func (s *Server) Check(ctx context.Context, token string) (*auth.Claims, *auth.Error) {
	if !strings.HasPrefix(token, AccessPrefix) || len(token) > 128 {
		return nil, &auth.Error{Code: "invalid_token", Reason: "malformed_token", Detail: "the token is not one this server issued"}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// A token that names its grant has the grant read beside its own record
	// (one round trip: rueidis pipelines the two); the record decides which
	// grant counts.
	var (
		g           grant
		gErr        error
		gDone       chan struct{}
		named, _, _ = strings.Cut(strings.TrimPrefix(token, AccessPrefix), ".")
	)
	if strings.Contains(token, ".") {
		gDone = make(chan struct{})
		go func() {
			defer close(gDone)
			gErr = s.loadJSON(ctx, keyGrant(named), &g)
		}()
	}
	var rec tokenRecord
	err := s.loadJSON(ctx, keyAccess(token), &rec)
	if gDone != nil {
		<-gDone
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, &auth.Error{Code: "invalid_token", Reason: "revoked", Detail: "the access token is unknown, expired or revoked; refresh it or sign in again"}
	case err != nil:
		return nil, &auth.Error{Code: "invalid_token", Reason: "store", Err: err, Detail: "the token could not be checked (the store is unreachable); try again"}
	}
	now := s.cfg.Now()
	if !now.Before(rec.Expires) {
		return nil, &auth.Error{Code: "invalid_token", Reason: "expired", Detail: "the access token has expired; refresh it"}
	}
	if gDone == nil || named != rec.Grant {
		// A token from before tokens named their grant (or one whose name
		// is not its record's): the grant its record names, read now.
		g = grant{}
		gErr = s.loadJSON(ctx, keyGrant(rec.Grant), &g)
	}
	switch err := gErr; {
	case errors.Is(err, store.ErrNotFound):
		return nil, &auth.Error{Code: "invalid_token", Reason: "revoked", Detail: "the access token's grant was revoked; sign in again"}
	case err != nil:
		return nil, &auth.Error{Code: "invalid_token", Reason: "store", Err: err, Detail: "the token could not be checked (the store is unreachable); try again"}
	}
	if _, ok := s.checkResource(g.Resource); !ok {
		return nil, &auth.Error{Code: "invalid_token", Reason: "audience", Detail: "the token's audience is not this server"}
	}
	scope := strings.Join(rec.Scope, " ")
	return &auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   g.Sub,
			Audience:  jwt.ClaimStrings{g.Resource},
			ExpiresAt: jwt.NewNumericDate(rec.Expires),
			IssuedAt:  jwt.NewNumericDate(rec.Expires.Add(-AccessTTL)),
			ID:        g.ID,
		},
		Scope:    &scope,
		Name:     g.Name,
		ClientID: g.ClientID,
	}, nil
}

// Owns reports whether a bearer string is this server's kind of token.
func Owns(token string) bool { return strings.HasPrefix(token, AccessPrefix) }

// sameResource compares resource indicators as URLs do: an empty path is
// "/" (RFC 3986 §6.2.3), so https://a.example and https://a.example/ name
// the same resource.
func sameResource(a, b string) bool {
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, r := range v {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' || r == '~') {
			return false
		}
	}
	return true
}

func pkceMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

// Owns reports whether token is this server's kind of access token (for
// handlers.TokenChecker).
func (s *Server) Owns(token string) bool { return Owns(token) }
