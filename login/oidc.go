package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// OIDCOptions configure `login oidc`.
type OIDCOptions struct {
	Issuer, ClientID, ClientSecret string
	// Scopes to ask for; must include openid.
	Scopes []string
	// Claim names the person: ClaimSub, ClaimEmail or ClaimPreferredUsername.
	Claim string
	// Allow is who may sign in.
	Allow *AllowList
	// Sessions keep who signed in.
	Sessions *Sessions
	// Records keep each sign-in's flow state (single use).
	Records store.KV
	// Origin is public_url's scheme://host[:port], where `back` paths lead;
	// Mount is its path, the prefix of the routes (the callback is
	// Origin+Mount+PathCallback).
	Origin, Mount string
	// PlainHTTP: the site is plain-http loopback (tests); the flow cookie
	// loses Secure and its __Host- prefix, like the session's.
	PlainHTTP bool
	// ClientAddr is the address a request comes from (the root passes
	// Caddy's client IP, which honours trusted_proxies); nil is RemoteAddr.
	ClientAddr func(*http.Request) string
	// Client talks to the provider (discovery, keys, the token endpoint).
	Client *http.Client
	Logger *zap.Logger
	// Now is the clock ID tokens are checked against; nil is time.Now.
	Now func() time.Time
}

// flowTTL is how long a started sign-in may take at the provider.
const flowTTL = 10 * time.Minute

// maxStartsPerAddress caps the sign-ins one address (one IPv6 /64) may
// start per flowTTL, across every instance: each start keeps a record in
// the store until it is used or expires, so unbounded starts would let
// anyone fill the store.
const maxStartsPerAddress = 60

// discoveryTimeout bounds discovery and the code exchange; discoveryRetry
// spaces attempts when the provider is down, so that a burst of sign-ins
// does not become a burst of requests to it.
const (
	providerTimeout = 10 * time.Second
	discoveryRetry  = 5 * time.Second
)

// OIDC is `login oidc`: the authorization-code flow with state, nonce and
// PKCE (S256) against an OpenID provider found by discovery, then a
// server-side session.
type OIDC struct {
	o          OIDCOptions
	flowCookie string
	secure     bool

	mu       sync.Mutex
	ready    *provider // nil until discovery succeeds
	failedAt time.Time
	lastErr  error
}

// provider is what discovery yields.
type provider struct {
	cfg      oauth2.Config
	verifier *oidc.IDTokenVerifier
}

// NewOIDC returns the `login oidc` Login. The provider is discovered on
// the first sign-in, not here, so that Caddy starts (and `caddy validate`
// passes) while the provider is unreachable; whoami and sessions work
// without it.
func NewOIDC(o OIDCOptions) (*OIDC, error) {
	switch {
	case o.Issuer == "" || o.ClientID == "":
		return nil, errors.New("login oidc: issuer and client_id are required")
	case o.Allow == nil:
		return nil, errors.New("login oidc: allow is required")
	case o.Sessions == nil || o.Records == nil:
		return nil, errors.New("login oidc: no store")
	case o.Origin == "":
		return nil, errors.New("login oidc: public_url is required")
	}
	switch o.Claim {
	case ClaimSub, ClaimEmail, ClaimPreferredUsername:
	default:
		return nil, fmt.Errorf("login oidc: unknown claim %q", o.Claim)
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: providerTimeout}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &OIDC{o: o, flowCookie: hostPrefix + flowCookie, secure: true}
	if o.PlainHTTP {
		l.flowCookie, l.secure = flowCookie, false
	}
	return l, nil
}

// provider returns the discovered provider, discovering it if needed.
func (l *OIDC) provider(ctx context.Context) (*provider, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ready != nil {
		return l.ready, nil
	}
	if !l.failedAt.IsZero() && time.Since(l.failedAt) < discoveryRetry {
		return nil, l.lastErr
	}
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, l.o.Client), l.o.Issuer)
	if err != nil {
		l.failedAt, l.lastErr = time.Now(), fmt.Errorf("discovering %s: %w", l.o.Issuer, err)
		return nil, l.lastErr
	}
	endpoint := p.Endpoint()
	endpoint.AuthStyle = authStyle(p)
	if l.o.ClientSecret == "" {
		// A public client: its id in the body, no Authorization header.
		endpoint.AuthStyle = oauth2.AuthStyleInParams
	}
	l.ready = &provider{
		cfg: oauth2.Config{ClientID: l.o.ClientID, ClientSecret: l.o.ClientSecret, Endpoint: endpoint,
			RedirectURL: l.o.Origin + l.o.Mount + PathCallback, Scopes: l.o.Scopes},
		// Checks the signature (keys from the provider's jwks_uri, algorithms
		// from its discovery document), iss, aud = client_id and exp.
		verifier: p.Verifier(&oidc.Config{ClientID: l.o.ClientID, Now: l.o.Now}),
	}
	return l.ready, nil
}

// authStyle is how the client authenticates at the token endpoint: as the
// discovery document says, basic by default (OpenID Connect Discovery
// §3). Never x/oauth2's auto-detection, which retries a refused code with
// the other style and then reports the second refusal.
func authStyle(p *oidc.Provider) oauth2.AuthStyle {
	var d struct {
		Methods []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := p.Claims(&d); err == nil && len(d.Methods) > 0 &&
		!slices.Contains(d.Methods, "client_secret_basic") && slices.Contains(d.Methods, "client_secret_post") {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

// Person implements identity.Login: the person of the request's session.
func (l *OIDC) Person(r *http.Request) (identity.Person, error) {
	return l.o.Sessions.Person(r)
}

// flow is what the store keeps between /login and /login/callback, under
// the state's digest.
type flow struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Back     string `json:"back"`
	// Browser is the digest of the flow cookie set on the browser that
	// started the sign-in; the callback must come with that cookie.
	Browser string `json:"browser"`
}

func flowKey(state string) string { return "login:flow:" + digest(state) }

// SignIn implements identity.Login: it sends the browser to the provider,
// or straight back when it is signed in already.
func (l *OIDC) SignIn(w http.ResponseWriter, r *http.Request, back string) {
	back = SafeBack(back)
	if _, err := l.Person(r); err == nil {
		redirect(w, l.o.Origin+back)
		return
	}
	p, err := l.provider(r.Context())
	if err != nil {
		l.o.Logger.Error("sign-in provider unavailable", zap.Error(err))
		showError(w, http.StatusBadGateway, "Sign-in unavailable", "The sign-in provider could not be reached. Try again in a moment.", "")
		return
	}
	state, nonce, browser := randomToken(), randomToken(), randomToken()
	// One binding per browser, so that sign-ins started in two tabs both
	// finish; the value is random and HttpOnly either way.
	if c, err := r.Cookie(l.flowCookie); err == nil && wellFormed(c.Value) {
		browser = c.Value
	}
	ok, err := l.countStart(r, state)
	if err == nil && !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(flowTTL/time.Second)))
		showError(w, http.StatusTooManyRequests, "Too many sign-ins",
			fmt.Sprintf("More than %d sign-ins were started from your address in %d minutes. Finish one, or try again later.", maxStartsPerAddress, int(flowTTL/time.Minute)), "")
		return
	}
	verifier := oauth2.GenerateVerifier()
	var b []byte
	if err == nil {
		b, err = json.Marshal(flow{Nonce: nonce, Verifier: verifier, Back: back, Browser: digest(browser)})
	}
	if err == nil {
		err = l.o.Records.Put(r.Context(), flowKey(state), b, flowTTL)
	}
	if err != nil {
		l.o.Logger.Error("storing a sign-in", zap.Error(err))
		showError(w, http.StatusServiceUnavailable, "Sign-in unavailable", "This site could not store the sign-in. Try again in a moment.", "")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: l.flowCookie, Value: browser, Path: "/", MaxAge: int(flowTTL / time.Second),
		HttpOnly: true, Secure: l.secure, SameSite: http.SameSiteLaxMode})
	redirect(w, p.cfg.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)))
}

// countStart counts a started sign-in against its address's cap, in an
// expiring set every instance shares; it reports whether the start is
// allowed.
func (l *OIDC) countStart(r *http.Request, state string) (bool, error) {
	key := "login:starts:" + digest(addressBucket(l.clientAddr(r)))
	ok, err := store.Admit(r.Context(), l.o.Records, key, digest(state), time.Now().Add(flowTTL), maxStartsPerAddress)
	if err != nil {
		return false, fmt.Errorf("counting a sign-in start: %w", err)
	}
	return ok, nil
}

func (l *OIDC) clientAddr(r *http.Request) string {
	if l.o.ClientAddr != nil {
		if a := l.o.ClientAddr(r); a != "" {
			return a
		}
	}
	return r.RemoteAddr
}

// addressBucket is the unit the start cap counts: an IPv4 address, or an
// IPv6 /64 (one host usually holds a whole /64).
func addressBucket(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// callbackError is a refused callback: its status and what to tell the
// person.
type callbackError struct {
	status int
	msg    string
}

func (e *callbackError) Error() string { return e.msg }

func refuse(status int, format string, args ...any) *callbackError {
	return &callbackError{status, fmt.Sprintf(format, args...)}
}

// callback answers GET /login/callback: the provider's redirect after the
// person signed in there.
func (l *OIDC) callback(w http.ResponseWriter, r *http.Request) {
	// The flow cookie stays until it expires: another tab's sign-in may
	// still need it.
	p, back, err := l.finish(r)
	if err != nil {
		var ce *callbackError
		if !errors.As(err, &ce) {
			l.o.Logger.Error("sign-in callback", zap.Error(err))
			ce = refuse(http.StatusServiceUnavailable, "This site could not finish the sign-in. Try again in a moment.")
		} else {
			l.o.Logger.Info("sign-in refused", zap.String("reason", ce.msg))
		}
		showError(w, ce.status, "Sign-in failed", ce.msg, l.o.Origin+l.o.Mount+PathLogin)
		return
	}
	if err := l.o.Sessions.Start(w, r, p); err != nil {
		l.o.Logger.Error("starting a session", zap.Error(err))
		showError(w, http.StatusServiceUnavailable, "Sign-in failed", "This site could not store the session. Try again in a moment.", "")
		return
	}
	l.o.Logger.Info("signed in", zap.String("person", p.ID))
	redirect(w, l.o.Origin+back)
}

// finish checks the provider's answer and returns who signed in and where
// they go next. A *callbackError says what was wrong; any other error is
// this site's (the store).
func (l *OIDC) finish(r *http.Request) (identity.Person, string, error) {
	var none identity.Person
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		return none, "", refuse(http.StatusBadRequest, "The provider's answer has no state, so it cannot belong to a sign-in started here. Start signing in again.")
	}
	if !wellFormed(state) {
		return none, "", refuse(http.StatusBadRequest, "This sign-in is unknown, expired or already used. Start signing in again.")
	}
	// Take: a state is used once, even by two callbacks at the same time.
	b, err := l.o.Records.Take(r.Context(), flowKey(state))
	if errors.Is(err, store.ErrNotFound) {
		return none, "", refuse(http.StatusBadRequest, "This sign-in is unknown, expired or already used. Start signing in again.")
	}
	if err != nil {
		return none, "", fmt.Errorf("reading the sign-in: %w", err)
	}
	var f flow
	if err := json.Unmarshal(b, &f); err != nil {
		return none, "", fmt.Errorf("decoding the sign-in: %w", err)
	}
	// Login CSRF: the answer must come back to the browser that asked.
	if c, err := r.Cookie(l.flowCookie); err != nil || digest(c.Value) != f.Browser {
		return none, "", refuse(http.StatusBadRequest, "This sign-in was started in another browser, or its cookie expired. Start signing in again here.")
	}
	if e := q.Get("error"); e != "" {
		msg := "The provider did not sign you in (" + clip(e) + ")"
		if d := q.Get("error_description"); d != "" {
			msg += ": " + clip(d)
		}
		return none, "", refuse(http.StatusForbidden, "%s.", msg)
	}
	code := q.Get("code")
	if code == "" {
		return none, "", refuse(http.StatusBadRequest, "The provider's answer has no code. Start signing in again.")
	}
	p, err := l.provider(r.Context())
	if err != nil {
		return none, "", refuse(http.StatusBadGateway, "The sign-in provider could not be reached. Try again in a moment.")
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), l.o.Client), providerTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, l.o.Client)
	tok, err := p.cfg.Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			reason := re.ErrorCode
			if reason == "" {
				reason = fmt.Sprintf("HTTP %d", re.Response.StatusCode)
			}
			return none, "", refuse(http.StatusBadRequest, "The provider refused the sign-in code (%s). Start signing in again.", clip(reason))
		}
		l.o.Logger.Error("exchanging the sign-in code", zap.Error(err))
		return none, "", refuse(http.StatusBadGateway, "The sign-in provider could not be reached. Try again in a moment.")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return none, "", refuse(http.StatusBadGateway, "The provider sent no ID token; is the openid scope allowed for this client?")
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		return none, "", refuse(http.StatusBadRequest, "The provider's ID token was refused: %s.", clip(err.Error()))
	}
	if idt.Nonce != f.Nonce {
		return none, "", refuse(http.StatusBadRequest, "The ID token belongs to another sign-in (its nonce does not match). Start signing in again.")
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return none, "", refuse(http.StatusBadRequest, "The ID token does not match its access token (at_hash).")
		}
	}
	person, err := l.person(idt)
	if err != nil {
		return none, "", err
	}
	return person, f.Back, nil
}

// claims are the ID-token claims a person is read from.
type claims struct {
	Sub               string `json:"sub"`
	Email             string `json:"email"`
	EmailVerified     any    `json:"email_verified"` // a bool, or "true" from some providers
	PreferredUsername string `json:"preferred_username"`
	Name              string `json:"name"`
}

func (c *claims) emailVerified() bool {
	switch v := c.EmailVerified.(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

// person picks the configured claim and applies the allow list.
func (l *OIDC) person(idt *oidc.IDToken) (identity.Person, error) {
	var c claims
	if err := idt.Claims(&c); err != nil {
		return identity.Person{}, refuse(http.StatusBadRequest, "The provider's ID token has unreadable claims.")
	}
	var id string
	switch l.o.Claim {
	case ClaimSub:
		id = c.Sub
	case ClaimEmail:
		id = c.Email
		if id != "" && !c.emailVerified() {
			return identity.Person{}, refuse(http.StatusForbidden, "The provider has not verified the email address %s, so it cannot sign you in here.", clip(id))
		}
		id = strings.ToLower(id)
	case ClaimPreferredUsername:
		id = c.PreferredUsername
	}
	if id == "" {
		return identity.Person{}, refuse(http.StatusForbidden, "The provider's ID token has no %s claim, which names people on this site (is its scope asked for?).", l.o.Claim)
	}
	if !validID(id) {
		return identity.Person{}, refuse(http.StatusForbidden, "The provider's %s claim cannot name a person here (too long, or spaces or control characters).", l.o.Claim)
	}
	if !l.o.Allow.Allows(id, l.o.Claim) {
		return identity.Person{}, refuse(http.StatusForbidden, "%s may not sign in to this site.", id)
	}
	name := c.Name
	if name == "" {
		name = c.PreferredUsername
	}
	if name == "" {
		name = id
	}
	return identity.Person{ID: id, Name: clip(name)}, nil
}

// clip bounds what the provider (or whoever forged its redirect) says
// before it is shown.
func clip(s string) string {
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// logout answers POST /logout: the session ends everywhere. Only a page of
// this origin may ask (a cross-site form could otherwise sign people out).
func (l *OIDC) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	if !l.sameOrigin(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "sign-out must come from a page of " + l.o.Origin + " (Origin or Sec-Fetch-Site)"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	back := ""
	if err := r.ParseForm(); err == nil {
		back = r.PostForm.Get("back")
	}
	if err := l.o.Sessions.End(w, r); err != nil {
		l.o.Logger.Error("signing out", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the session could not be ended: the session store is unavailable"})
		return
	}
	if back == "" {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	redirect(w, l.o.Origin+SafeBack(back))
}

// sameOrigin reports whether a browser says r comes from this origin.
func (l *OIDC) sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		return strings.EqualFold(o, l.o.Origin)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// Routes implements identity.Login.
func (l *OIDC) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		PathLogin: signInRoute(l.SignIn),
		PathCallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet {
				methodNotAllowed(w, http.MethodGet)
				return
			}
			l.callback(w, r)
		}),
		PathLogout: http.HandlerFunc(l.logout),
		PathWhoami: whoami(l),
	}
}

// Close implements identity.Login; go-oidc fetches keys on demand, so
// nothing runs in the background.
func (l *OIDC) Close(context.Context) error { return nil }

var _ identity.Login = (*OIDC)(nil)
