// Package auth verifies and mints the HS256 bearer tokens agents and apps use.
//
// The parser is pinned: HS256 only, exp required, iat checked, 30 s leeway,
// iss/aud required when configured and aud refused when not, `typ` JWT or
// absent, any `crit` header refused, lifetimes capped (30 days by default),
// revoked `jti`s refused, and bearer strings over 8 KiB refused before
// parsing. There is no anonymous mode: a Verifier cannot be built without a
// secret of at least 32 bytes, or (NewVerifierFrom, modes.go) an identity
// provider's keys; NewVerifierFrom also takes previous secrets (rotation.go).
package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinSecretLength is the shortest HMAC secret accepted (RFC 7518 §3.2: a key at
// least as long as the hash output).
const MinSecretLength = 32

// MaxBearerLength caps the Authorization value before any parsing work.
const MaxBearerLength = 8 << 10

// Leeway is the clock skew tolerated on exp and iat.
const Leeway = 30 * time.Second

// DefaultMaxTTL is the longest token lifetime Mint signs and a Verifier
// accepts unless configured otherwise (TokenOptions.MaxTTL,
// VerifierOptions.MaxTTL). A leaked token is then useful for a month at most.
const DefaultMaxTTL = 30 * 24 * time.Hour

// Scopes a token may carry. A token without a scope claim may do everything
// its subject owns; one with a scope claim may do only what it lists.
const (
	ScopeCreate = "feedback:create"
	ScopeRead   = "feedback:read"
	// ScopeAnswer lets the owner answer its own questions over REST. It is
	// never implied: only a token that lists it has it.
	ScopeAnswer = "feedback:answer"
)

// Scopes lists every scope a token may name (Mint refuses others).
var Scopes = []string{ScopeCreate, ScopeRead, ScopeAnswer}

// Claims are the JWT claims this module reads.
type Claims struct {
	jwt.RegisteredClaims
	// Scope is a space-separated list (RFC 9068 §2.2.3). nil means the
	// claim is absent; an empty string means "no scopes".
	Scope *string `json:"scope,omitempty"`
	// Name is an optional display name for logs.
	Name string `json:"name,omitempty"`
	// ClientID is the OAuth client the token was issued to (RFC 9068
	// §2.2), when an authorization server says so.
	ClientID string `json:"client_id,omitempty"`
}

// HasScope reports whether the token allows scope.
func (c *Claims) HasScope(scope string) bool {
	if c.Scope == nil {
		// No scope claim: everything its subject owns, except answering,
		// which a token must name (ScopeAnswer).
		return scope != ScopeAnswer
	}
	return slices.Contains(strings.Fields(*c.Scope), scope)
}

// Error is a failed verification. Code is the RFC 6750 error code for the
// WWW-Authenticate header; Reason is a short word for logs and metrics.
type Error struct {
	Code   string // "" (no credentials), "invalid_request" or "invalid_token"
	Reason string // missing, malformed, duplicate_header, too_long, expired, signature, lifetime, typ, audience, revoked, ...
	Err    error
	// Detail, when set, is the Description: a sentence more precise than
	// the reason's generic one. It never contains the token.
	Detail string
}

// Status is the HTTP status for the error (RFC 6750 §3.1): 400 for
// invalid_request (a malformed header, two Authorization headers), 401
// otherwise.
func (e *Error) Status() int {
	if e.Code == "invalid_request" {
		return http.StatusBadRequest
	}
	return http.StatusUnauthorized
}

// Temporary reports a token that could not be checked rather than one
// found wrong: the store holding opaque tokens is unreachable, or the
// identity provider's keys have not been loaded. The token may be fine, so
// the answer is 503 and a retry, not a 401 that would send the client
// through sign-in again.
func (e *Error) Temporary() bool { return e.Reason == "store" || e.Reason == "keys_unavailable" }

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// Description is a sentence a client developer can act on. It never echoes
// the token.
func (e *Error) Description() string {
	if e.Detail != "" {
		return e.Detail
	}
	switch e.Reason {
	case "missing":
		return "an Authorization: Bearer <JWT> header is required"
	case "malformed":
		return "the Authorization header must be 'Bearer <JWT>'"
	case "duplicate_header":
		return "send exactly one Authorization header"
	case "lifetime":
		return "the token's lifetime is longer than this server accepts; mint a shorter-lived one"
	case "typ":
		return "the token's typ header must be JWT (or absent)"
	case "audience":
		return "the token's audience (aud) is not this server"
	case "revoked":
		return "the token has been revoked; mint a new one"
	case "too_long":
		return fmt.Sprintf("the bearer token is longer than %d bytes", MaxBearerLength)
	case "expired":
		return "the token has expired; mint a new one"
	case "not_yet_valid":
		return "the token is not valid yet (iat or nbf in the future)"
	case "claims":
		return "the token lacks a required claim or has a wrong issuer"
	default:
		return "the token is not valid for this server"
	}
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	secret   []byte
	parser   *jwt.Parser
	audience string
	maxTTL   time.Duration
	denied   map[string]bool
	// verified remembers tokens whose signature and claims checked out, so
	// an agent's repeated calls skip the HMAC and JSON work (the largest
	// cost of a status request in profiles). Claims of a signed token
	// cannot change, so a hit only has to check that it has not expired
	// and, in JWKS mode, that the keys have not been fetched anew since
	// (a dropped key must stop verifying its tokens).
	mu       sync.Mutex
	verified map[string]verifiedToken
	// modes: previous secrets and JWKS (modes.go, NewVerifierFrom).
	modes verifierModes
}

// verifiedCacheSize bounds the cache; when full it starts over.
const verifiedCacheSize = 4096

// verifiedToken is an entry of Verifier.verified: the claims, and the
// generation of the JWKS they were checked against (keysGeneration).
type verifiedToken struct {
	claims *Claims
	keys   uint64
}

// keysGeneration is the generation of the identity provider's key set, 0
// without JWKS mode.
func (v *Verifier) keysGeneration() uint64 {
	if v.modes.remote == nil {
		return 0
	}
	return v.modes.remote.generation()
}

// VerifierOptions configure a Verifier beyond its secret.
type VerifierOptions struct {
	// Issuer, when set, is required as every token's iss.
	Issuer string
	// Audience, when set, must be among every token's aud. When empty, a
	// token that carries any aud is refused: it was minted for someone else.
	Audience string
	// MaxTTL caps the lifetime of an accepted token: exp - iat, or, without
	// iat, exp - now (plus Leeway). Zero or less means DefaultMaxTTL.
	MaxTTL time.Duration
	// DeniedJTIs are revoked token ids (jti): one token can be withdrawn
	// without rotating the secret.
	DeniedJTIs []string
}

// NewVerifier builds a Verifier with the default options. issuer and
// audience are required in every token when not empty.
func NewVerifier(secret []byte, issuer, audience string) (*Verifier, error) {
	return NewVerifierWith(secret, VerifierOptions{Issuer: issuer, Audience: audience})
}

// NewVerifierWith builds a Verifier.
func NewVerifierWith(secret []byte, o VerifierOptions) (*Verifier, error) {
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("jwt secret must be at least %d bytes, got %d", MinSecretLength, len(secret))
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	denied := map[string]bool{}
	for _, id := range o.DeniedJTIs {
		if id = strings.TrimSpace(id); id != "" {
			denied[id] = true
		}
	}
	return &Verifier{secret: slices.Clone(secret), parser: jwt.NewParser(opts...), audience: o.Audience,
		maxTTL: o.MaxTTL, denied: denied, verified: map[string]verifiedToken{}}, nil
}

// BearerToken extracts the token from an Authorization header value. The
// scheme is case-insensitive (RFC 6750 §2.1).
func BearerToken(header string) (string, *Error) {
	if header == "" {
		return "", &Error{Reason: "missing"}
	}
	if len(header) > MaxBearerLength+len("Bearer ") {
		return "", &Error{Code: "invalid_token", Reason: "too_long"}
	}
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", &Error{Code: "invalid_request", Reason: "malformed"}
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || strings.ContainsAny(tok, " \t") {
		return "", &Error{Code: "invalid_request", Reason: "malformed"}
	}
	return tok, nil
}

// BearerFrom extracts the token from a request's headers. More than one
// Authorization header is refused with Code invalid_request and Reason
// duplicate_header (answer 400, see Error.Status): a proxy in front might
// read the other one, and then it and we would disagree about who asked.
func BearerFrom(h http.Header) (string, *Error) {
	values := h.Values("Authorization")
	if len(values) > 1 {
		return "", &Error{Code: "invalid_request", Reason: "duplicate_header"}
	}
	if len(values) == 0 {
		return "", &Error{Reason: "missing"}
	}
	return BearerToken(values[0])
}

// VerifyRequest checks the Authorization header of a request (exactly one,
// see BearerFrom) and returns its claims.
func (v *Verifier) VerifyRequest(h http.Header) (*Claims, *Error) {
	tok, aerr := BearerFrom(h)
	if aerr != nil {
		return nil, aerr
	}
	return v.Verify(tok)
}

// VerifyHeader checks an Authorization header value and returns its claims.
// VerifyRequest also refuses a second Authorization header.
func (v *Verifier) VerifyHeader(header string) (*Claims, *Error) {
	tok, aerr := BearerToken(header)
	if aerr != nil {
		return nil, aerr
	}
	return v.Verify(tok)
}

// Verify checks a bare token and returns its claims.
func (v *Verifier) Verify(token string) (*Claims, *Error) {
	if len(token) > MaxBearerLength {
		return nil, &Error{Code: "invalid_token", Reason: "too_long"}
	}
	// Read before parsing: a fetch during the parse leaves the entry
	// marked with the older key set, so the next hit checks it again.
	gen := v.keysGeneration()
	v.mu.Lock()
	cached, hit := v.verified[token]
	v.mu.Unlock()
	if hit {
		if cached.keys == gen && time.Now().Before(cached.claims.ExpiresAt.Add(Leeway)) {
			return cached.claims.clone(), nil
		}
		v.mu.Lock()
		delete(v.verified, token)
		v.mu.Unlock()
	}
	claims := &Claims{}
	if aerr := v.parse(token, claims); aerr != nil {
		return nil, aerr
	}
	if claims.Subject == "" {
		return nil, &Error{Code: "invalid_token", Reason: "claims", Err: errors.New("token has no sub claim")}
	}
	if aerr := v.checkClaims(claims, time.Now()); aerr != nil {
		return nil, aerr
	}
	v.mu.Lock()
	if len(v.verified) >= verifiedCacheSize {
		clear(v.verified)
	}
	v.verified[token] = verifiedToken{claims: claims.clone(), keys: gen}
	v.mu.Unlock()
	return claims, nil
}

// checkClaims applies what the parser does not: an aud when none is
// configured, the lifetime cap and the deny-list.
func (v *Verifier) checkClaims(c *Claims, now time.Time) *Error {
	if v.audience == "" && len(c.Audience) > 0 {
		return &Error{Code: "invalid_token", Reason: "audience", Err: errors.New("token has an aud claim and no audience is configured"),
			Detail: "the token names an audience (aud) and this server is configured without one: mint it without an audience, or configure jwt_audience"}
	}
	exp := c.ExpiresAt.Time
	if c.IssuedAt != nil {
		if life := exp.Sub(c.IssuedAt.Time); life > v.maxTTL {
			return &Error{Code: "invalid_token", Reason: "lifetime", Err: fmt.Errorf("exp - iat is %s", life),
				Detail: fmt.Sprintf("the token is valid for %s (exp - iat); this server accepts at most %s", life, v.maxTTL)}
		}
	} else if left := exp.Sub(now); left > v.maxTTL+Leeway {
		return &Error{Code: "invalid_token", Reason: "lifetime", Err: fmt.Errorf("no iat and exp is %s away", left.Round(time.Second)),
			Detail: fmt.Sprintf("the token has no iat and expires in %s; this server accepts at most %s", left.Round(time.Second), v.maxTTL)}
	}
	if c.ID != "" && v.denied[c.ID] {
		return &Error{Code: "invalid_token", Reason: "revoked", Err: errors.New("jti is on the deny-list")}
	}
	return nil
}

// clone copies the claims so that callers cannot change the cached ones.
func (c *Claims) clone() *Claims {
	out := *c
	out.Audience = slices.Clone(c.Audience)
	for _, d := range []**jwt.NumericDate{&out.ExpiresAt, &out.IssuedAt, &out.NotBefore} {
		if *d != nil {
			nd := **d
			*d = &nd
		}
	}
	if c.Scope != nil {
		s := *c.Scope
		out.Scope = &s
	}
	return &out
}

var (
	errCrit = errors.New("tokens with a crit header are not accepted")
	errTyp  = errors.New("the typ header must be JWT or absent")
)

func (v *Verifier) key(t *jwt.Token) (any, error) {
	// RFC 7515 §4.1.11: a recipient that does not understand a critical
	// extension must reject the token; the library ignores crit, so we do it.
	if _, ok := t.Header["crit"]; ok {
		return nil, errCrit
	}
	// RFC 8725 §3.11: explicit typing keeps one kind of JWT from being
	// taken for another (an OAuth at+jwt, a logout token, …). Ours are
	// plain JWTs: typ JWT, its media-type form application/jwt
	// (RFC 7515 §4.1.9), or no typ at all; case does not matter.
	if typ, ok := t.Header["typ"]; ok {
		s, _ := typ.(string)
		if !strings.EqualFold(s, "JWT") && !strings.EqualFold(s, "application/jwt") {
			return nil, errTyp
		}
	}
	return v.secret, nil
}

func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not_yet_valid"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature"
	case errors.Is(err, errCrit):
		return "crit"
	case errors.Is(err, errTyp):
		return "typ"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrTokenInvalidIssuer),
		errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "claims"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "algorithm"
	default:
		return "malformed_token"
	}
}

// TokenOptions describe a token to mint.
type TokenOptions struct {
	Subject string
	TTL     time.Duration
	// MaxTTL caps TTL; zero or less means DefaultMaxTTL. Raise it only
	// together with the verifier's cap (VerifierOptions.MaxTTL).
	MaxTTL   time.Duration
	Scope    []string // nil: no scope claim (create and read own sessions; never answer)
	Name     string
	Issuer   string
	Audience string
	// ID is the token's jti, which a verifier's DeniedJTIs can revoke;
	// empty: a random one (NewTokenID).
	ID  string
	Now time.Time // zero: time.Now()
}

// NewTokenID returns a random token id (jti): 26 base32 characters, 128 bits.
func NewTokenID() string { return rand.Text() }

// Mint signs an HS256 token for programmatic use and for the
// `caddy mcp-feedback token` command.
func Mint(secret []byte, o TokenOptions) (string, error) {
	if len(secret) < MinSecretLength {
		return "", fmt.Errorf("jwt secret must be at least %d bytes, got %d", MinSecretLength, len(secret))
	}
	if o.Subject == "" {
		return "", errors.New("a subject is required")
	}
	if o.TTL <= 0 {
		return "", errors.New("ttl must be positive")
	}
	maxTTL := o.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	if o.TTL > maxTTL {
		return "", fmt.Errorf("ttl %s is longer than the cap of %s: servers refuse such tokens unless their own cap is raised too", o.TTL, maxTTL)
	}
	for _, sc := range o.Scope {
		if !slices.Contains(Scopes, sc) {
			return "", fmt.Errorf("unknown scope %q; the scopes are %s", sc, strings.Join(Scopes, ", "))
		}
	}
	if o.ID == "" {
		o.ID = NewTokenID()
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   o.Subject,
			Issuer:    o.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(o.TTL)),
			ID:        o.ID,
		},
		Name: o.Name,
	}
	if o.Audience != "" {
		c.Audience = jwt.ClaimStrings{o.Audience}
	}
	if o.Scope != nil {
		s := strings.Join(o.Scope, " ")
		c.Scope = &s
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["kid"] = SecretKeyID(secret) // picks the secret after a rotation (rotation.go)
	tok, err := t.SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return tok, nil
}
