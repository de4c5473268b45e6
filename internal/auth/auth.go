// Package auth verifies and mints the HS256 bearer tokens agents and apps use.
//
// The parser is pinned: HS256 only, exp required, iat checked, 30 s leeway,
// iss/aud required when configured, any `crit` header refused, and bearer
// strings over 8 KiB refused before parsing. There is no anonymous mode: a
// Verifier cannot be built without a secret of at least 32 bytes.
package auth

import (
	"errors"
	"fmt"
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

// Scopes a token may carry. A token without a scope claim may do everything
// its subject owns; one with a scope claim may do only what it lists.
const (
	ScopeCreate = "feedback:create"
	ScopeRead   = "feedback:read"
	// ScopeAnswer lets the owner answer its own questions over REST. It is
	// never implied: only a token that lists it has it.
	ScopeAnswer = "feedback:answer"
)

// Claims are the JWT claims this module reads.
type Claims struct {
	jwt.RegisteredClaims
	// Scope is a space-separated list (RFC 9068 §2.2.3). nil means the
	// claim is absent; an empty string means "no scopes".
	Scope *string `json:"scope,omitempty"`
	// Name is an optional display name for logs.
	Name string `json:"name,omitempty"`
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
	Reason string // missing, malformed, too_long, expired, signature, ...
	Err    error
}

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
	switch e.Reason {
	case "missing":
		return "an Authorization: Bearer <JWT> header is required"
	case "malformed":
		return "the Authorization header must be 'Bearer <JWT>'"
	case "too_long":
		return fmt.Sprintf("the bearer token is longer than %d bytes", MaxBearerLength)
	case "expired":
		return "the token has expired; mint a new one"
	case "not_yet_valid":
		return "the token is not valid yet (iat or nbf in the future)"
	case "claims":
		return "the token lacks a required claim or has a wrong issuer or audience"
	default:
		return "the token is not valid for this server"
	}
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
	// verified remembers tokens whose signature and claims checked out, so
	// an agent's repeated calls skip the HMAC and JSON work (the largest
	// cost of a status request in profiles). Claims of a signed token
	// cannot change, so a hit only has to check that it has not expired.
	mu       sync.Mutex
	verified map[string]*Claims
}

// verifiedCacheSize bounds the cache; when full it starts over.
const verifiedCacheSize = 4096

// NewVerifier builds a Verifier. issuer and audience are required in every
// token when not empty.
func NewVerifier(secret []byte, issuer, audience string) (*Verifier, error) {
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("jwt secret must be at least %d bytes, got %d", MinSecretLength, len(secret))
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	}
	if issuer != "" {
		opts = append(opts, jwt.WithIssuer(issuer))
	}
	if audience != "" {
		opts = append(opts, jwt.WithAudience(audience))
	}
	return &Verifier{secret: slices.Clone(secret), parser: jwt.NewParser(opts...), verified: map[string]*Claims{}}, nil
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

// VerifyHeader checks an Authorization header value and returns its claims.
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
	v.mu.Lock()
	cached := v.verified[token]
	v.mu.Unlock()
	if cached != nil {
		if time.Now().Before(cached.ExpiresAt.Add(Leeway)) {
			return cached.clone(), nil
		}
		v.mu.Lock()
		delete(v.verified, token)
		v.mu.Unlock()
	}
	claims := &Claims{}
	_, err := v.parser.ParseWithClaims(token, claims, v.key)
	if err != nil {
		return nil, &Error{Code: "invalid_token", Reason: reason(err), Err: err}
	}
	if claims.Subject == "" {
		return nil, &Error{Code: "invalid_token", Reason: "claims", Err: errors.New("token has no sub claim")}
	}
	v.mu.Lock()
	if len(v.verified) >= verifiedCacheSize {
		clear(v.verified)
	}
	v.verified[token] = claims.clone()
	v.mu.Unlock()
	return claims, nil
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

var errCrit = errors.New("tokens with a crit header are not accepted")

func (v *Verifier) key(t *jwt.Token) (any, error) {
	// RFC 7515 §4.1.11: a recipient that does not understand a critical
	// extension must reject the token; the library ignores crit, so we do it.
	if _, ok := t.Header["crit"]; ok {
		return nil, errCrit
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
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrTokenInvalidIssuer),
		errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "claims"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "algorithm"
	default:
		return "malformed_token"
	}
}

// TokenOptions describe a token to mint.
type TokenOptions struct {
	Subject  string
	TTL      time.Duration
	Scope    []string // nil: no scope claim (full access to own sessions)
	Name     string
	Issuer   string
	Audience string
	Now      time.Time // zero: time.Now()
}

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
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return tok, nil
}
