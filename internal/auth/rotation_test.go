package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestMintSetsKID: minted tokens name their secret's kid.
func TestMintSetsKID(t *testing.T) {
	tok, err := Mint(secret, TokenOptions{Subject: "a", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if kid := parsed.Header["kid"]; kid != SecretKeyID(secret) || len(SecretKeyID(secret)) != 8 {
		t.Fatalf("kid %v, want %s", kid, SecretKeyID(secret))
	}
	if SecretKeyID(secret) == SecretKeyID([]byte(strings.ToUpper(string(secret)))) {
		t.Fatal("two secrets, one kid")
	}
}

// TestSecretRotation: after a rotation (new current secret, the old one
// among the previous ones), tokens of both verify; the kid picks the
// secret; tokens without kid are tried against every secret; a secret
// that was dropped verifies nothing.
func TestSecretRotation(t *testing.T) {
	cur := []byte("current-secret-0123456789abcdef01")
	old := []byte("old-secret-0123456789abcdef012345")
	older := []byte("older-secret-0123456789abcdef0123")
	dropped := []byte("dropped-secret-0123456789abcdef01")
	v, err := NewVerifierFrom(t.Context(), Options{Secret: cur, PreviousSecrets: [][]byte{old, older, cur}})
	if err != nil {
		t.Fatal(err)
	}
	single, err := NewVerifierFrom(t.Context(), Options{Secret: cur})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(s []byte) string {
		tok, err := Mint(s, TokenOptions{Subject: "agent", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	claims := jwt.MapClaims{"sub": "agent", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	withKID := func(s []byte, kid any) string {
		h := map[string]any{"alg": "HS256", "typ": "JWT"}
		if kid != nil {
			h["kid"] = kid
		}
		return forge(t, h, claims, jwt.SigningMethodHS256, s)
	}
	for _, tc := range []struct {
		name  string
		v     *Verifier
		token string
		want  string
	}{
		{"current", v, mint(cur), ""},
		{"previous", v, mint(old), ""},
		{"the one before", v, mint(older), ""},
		{"dropped secret", v, mint(dropped), "signature"},
		{"no kid, current", v, withKID(cur, nil), ""},
		{"no kid, previous (minted before kids existed)", v, withKID(old, nil), ""},
		{"no kid, dropped", v, withKID(dropped, nil), "signature"},
		{"kid of the old secret, signed by the current one", v, withKID(cur, SecretKeyID(old)), "signature"},
		{"kid of the current secret, signed by a dropped one", v, withKID(dropped, SecretKeyID(cur)), "signature"},
		{"foreign kid, current (other tooling)", v, withKID(cur, "v1"), ""},
		{"foreign kid, dropped", v, withKID(dropped, "v1"), "signature"},
		{"kid injection", v, withKID(dropped, "../../dev/null"), "signature"},
		{"HS512 by the current secret", v, forge(t, map[string]any{"alg": "HS512"}, claims, jwt.SigningMethodHS512, cur), "signature"},
		{"alg none (refused as in one-secret mode)", v, forge(t, map[string]any{"alg": "none"}, claims, nil, nil), "signature"},
		{"typ at+jwt by the current secret", v, forge(t, map[string]any{"alg": "HS256", "typ": "at+jwt"}, claims, jwt.SigningMethodHS256, cur), "typ"},
		{"one secret: previous is not accepted", single, mint(old), "signature"},
		{"one secret: kid ignored as before", single, withKID(cur, "v1"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, aerr := tc.v.Verify(tc.token)
			switch {
			case tc.want == "" && aerr != nil:
				t.Fatalf("refused: %v", aerr)
			case tc.want != "" && aerr == nil:
				t.Fatal("accepted")
			case tc.want != "" && aerr.Reason != tc.want:
				t.Fatalf("reason %q (%v), want %q", aerr.Reason, aerr, tc.want)
			}
		})
	}
}
