package auth

// The Verifier's modes: one shared secret (auth.go, NewVerifierWith), secret
// rotation (rotation.go), JWKS (jwks.go), and both at once, built by
// NewVerifierFrom.
//
// Both at once is meant for a migration from minted tokens to an identity
// provider's. A token goes to one path only, chosen by its alg: HS256 to
// the shared secrets, whose keyfunc returns nothing but secrets, and whose
// parser allows nothing but HS256; anything else to the JWKS, whose parser
// allows only asymmetric algorithms and whose keyfunc returns only public
// keys of the algorithm the key itself names. An HS256 token therefore
// never meets an RSA or EC key, whatever its kid or iss say. The kid and
// iss then narrow each path: an HS256 token whose kid is not one of the
// secrets' is refused, and so is one whose iss is the identity provider's,
// which only the provider may sign for; tokens are owned by (iss, sub).

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// verifierModes is the part of a Verifier beyond the one secret.
type verifierModes struct {
	// on: any of the below is in use; false keeps the original path.
	on bool
	// hs holds the shared secrets; nil when there are none (JWKS only).
	hs *hsKeys
	// remote, jwksParser and issuer are JWKS mode; remote nil when off.
	remote     *remoteKeys
	jwksParser *jwt.Parser
	issuer     string
}

// Options configure a Verifier in any mode (NewVerifierFrom).
type Options struct {
	VerifierOptions
	// Secret is the current shared secret (HS256, at least
	// MinSecretLength bytes): it verifies, and Mint signs with it. Empty:
	// no shared-secret tokens, JWKS must be set.
	Secret []byte
	// PreviousSecrets verify tokens signed before a rotation, never sign;
	// each at least MinSecretLength bytes. They need Secret.
	PreviousSecrets [][]byte
	// JWKS, when its URL or OIDCIssuer is set, accepts tokens signed by an
	// identity provider. Issuer and Audience are then required; Issuer
	// defaults to JWKS.OIDCIssuer. With Secret too, both kinds of token
	// are accepted (see the package comment of modes.go).
	JWKS JWKSOptions
}

// NewVerifierFrom builds a Verifier in any mode. ctx bounds the JWKS
// fetches (pass the Caddy context, so they stop when the configuration is
// unloaded); Close stops them earlier.
func NewVerifierFrom(ctx context.Context, o Options) (*Verifier, error) {
	jwks := o.JWKS.enabled()
	if len(o.Secret) == 0 && !jwks {
		return nil, errors.New("a shared secret or a JWKS (URL or OIDC issuer) is required")
	}
	if len(o.Secret) == 0 && len(o.PreviousSecrets) > 0 {
		return nil, errors.New("previous secrets need a current secret")
	}
	for i, s := range o.PreviousSecrets {
		if len(s) < MinSecretLength {
			return nil, fmt.Errorf("previous secret %d must be at least %d bytes, got %d", i+1, MinSecretLength, len(s))
		}
	}
	if jwks {
		if o.Issuer == "" {
			o.Issuer = o.JWKS.OIDCIssuer
		}
		if o.Issuer == "" {
			return nil, errors.New("an issuer is required with a JWKS URL: the iss the identity provider puts in its tokens")
		}
		if o.Audience == "" {
			return nil, errors.New("an audience is required with a JWKS: an identity provider signs tokens for many services, and only those naming this one (aud) may be accepted")
		}
	}
	if !jwks && len(o.PreviousSecrets) == 0 {
		return NewVerifierWith(o.Secret, o.VerifierOptions)
	}

	secret, hsOpts := o.Secret, o.VerifierOptions
	if jwks {
		// The identity provider's issuer is checked on JWKS tokens; an
		// HS256 token must not claim it (parse).
		hsOpts.Issuer = ""
	}
	if len(secret) == 0 {
		// JWKS only: the shared-secret path is never taken (parse), and a
		// secret nobody knows stands in for the missing one.
		secret = []byte(rand.Text() + rand.Text())
	}
	v, err := NewVerifierWith(secret, hsOpts)
	if err != nil {
		return nil, err
	}
	v.modes.on = true
	if len(o.Secret) > 0 {
		v.modes.hs = newHSKeys(append([][]byte{o.Secret}, o.PreviousSecrets...))
	}
	if jwks {
		opts := []jwt.ParserOption{
			jwt.WithValidMethods(AsymmetricAlgs),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
			jwt.WithIssuer(o.Issuer),
			jwt.WithAudience(o.Audience),
		}
		v.modes.jwksParser = jwt.NewParser(opts...)
		v.modes.issuer = o.Issuer
		if v.modes.remote, err = newRemoteKeys(ctx, o.JWKS); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Close stops the JWKS fetches, if any: the background refresh and the
// refetch on an unknown kid (keys fetched already stay usable). Safe to
// call more than once, and on any Verifier, nil included.
func (v *Verifier) Close() {
	if v != nil && v.modes.remote != nil {
		v.modes.remote.close()
	}
}

// JWKSMode reports whether the Verifier accepts identity-provider tokens.
func (v *Verifier) JWKSMode() bool { return v.modes.remote != nil }

// parse verifies token's signature and standard claims into claims.
func (v *Verifier) parse(token string, claims *Claims) *Error {
	if !v.modes.on {
		_, err := v.parser.ParseWithClaims(token, claims, v.key)
		if err != nil {
			return &Error{Code: "invalid_token", Reason: reason(err), Err: err}
		}
		return nil
	}
	alg := headerAlg(token)
	if v.modes.remote == nil || (alg == jwt.SigningMethodHS256.Alg() && v.modes.hs != nil) {
		_, err := v.parser.ParseWithClaims(token, claims, v.hsKeyfunc)
		if err != nil {
			return modeError(err)
		}
		if v.modes.remote != nil && claims.Issuer == v.modes.issuer {
			return &Error{Code: "invalid_token", Reason: "claims", Err: errors.New("an HS256 token names the identity provider as its issuer"),
				Detail: "a token signed with the shared secret may not name the identity provider as its issuer (iss)"}
		}
		return nil
	}
	if !slices.Contains(AsymmetricAlgs, alg) {
		return &Error{Code: "invalid_token", Reason: "algorithm", Err: fmt.Errorf("alg %q is not accepted", alg),
			Detail: "this server accepts tokens signed with " + strings.Join(v.acceptedAlgs(), ", ")}
	}
	_, err := v.modes.jwksParser.ParseWithClaims(token, claims, v.modes.remote.keyfunc)
	if err != nil {
		return modeError(err)
	}
	return nil
}

func (v *Verifier) acceptedAlgs() []string {
	var algs []string
	if v.modes.hs != nil {
		algs = append(algs, "HS256 (the shared secret)")
	}
	if v.modes.remote != nil {
		algs = append(algs, strings.Join(AsymmetricAlgs, ", ")+" (the identity provider's keys)")
	}
	return algs
}

// modeError maps the errors of the rotation and JWKS keyfuncs, then the
// library's as in shared-secret mode.
func modeError(err error) *Error {
	e := &Error{Code: "invalid_token", Err: err}
	switch {
	case errors.Is(err, errUnknownKID):
		e.Reason, e.Detail = "unknown_kid", "the token's key id (kid) names no key this server knows"
	case errors.Is(err, errKeysUnavailable):
		e.Reason, e.Detail = "keys_unavailable", "the identity provider's keys have not been loaded yet; try again shortly"
	case errors.Is(err, errKeyAlg):
		e.Reason, e.Detail = "algorithm", "the token's alg is not the algorithm of the key its kid names"
	case errors.Is(err, errJWKSTyp):
		e.Reason, e.Detail = "typ", "the token's typ header must be at+jwt, JWT or absent"
	default:
		e.Reason = reason(err)
	}
	return e
}

// headerAlg reads the alg of a compact JWS without verifying anything; ""
// when it cannot. It only picks a path: each path's parser checks the
// token again from scratch.
func headerAlg(token string) string {
	head, _, ok := strings.Cut(token, ".")
	if !ok || len(head) > 4096 {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return ""
	}
	return h.Alg
}
