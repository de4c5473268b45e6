package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestNewVerifierRefusesWeakSecrets(t *testing.T) {
	for _, s := range []string{"", "short", strings.Repeat("x", MinSecretLength-1)} {
		if _, err := NewVerifier([]byte(s), "", ""); err == nil {
			t.Errorf("secret of %d bytes accepted", len(s))
		}
	}
	if _, err := Mint([]byte("short"), TokenOptions{Subject: "a", TTL: time.Hour}); err == nil {
		t.Error("Mint accepted a short secret")
	}
}

func TestMintVerifyRoundTrip(t *testing.T) {
	v, err := NewVerifier(secret, "iss", "aud")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Mint(secret, TokenOptions{Subject: "alice", TTL: time.Hour, Issuer: "iss", Audience: "aud", Scope: []string{ScopeRead}, Name: "A"})
	if err != nil {
		t.Fatal(err)
	}
	c, aerr := v.VerifyHeader("Bearer " + tok)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if c.Subject != "alice" || c.Issuer != "iss" || c.Name != "A" || !c.HasScope(ScopeRead) || c.HasScope(ScopeCreate) {
		t.Fatalf("claims %+v", c)
	}
	unscoped, _ := Mint(secret, TokenOptions{Subject: "bob", TTL: time.Hour, Issuer: "iss", Audience: "aud"})
	if c, aerr := v.Verify(unscoped); aerr != nil || !c.HasScope(ScopeCreate) || !c.HasScope(ScopeRead) {
		t.Fatalf("unscoped token: %v %+v", aerr, c)
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{
		"":            "missing",
		"Bearer":      "malformed",
		"Bearer ":     "malformed",
		"Basic abc":   "malformed",
		"Bearer a b":  "malformed",
		"Bearer\tabc": "malformed",
		"Bearer " + strings.Repeat("a", MaxBearerLength+1): "too_long",
	} {
		if _, aerr := BearerToken(h); aerr == nil || aerr.Reason != want {
			t.Errorf("BearerToken(%.20q) = %v, want %s", h, aerr, want)
		}
	}
	if tok, aerr := BearerToken("bEaReR abc"); aerr != nil || tok != "abc" {
		t.Errorf("case-insensitive scheme: %q %v", tok, aerr)
	}
}

// FuzzVerifyHeader: no Authorization value panics, and none without a
// valid signature is accepted.
func FuzzVerifyHeader(f *testing.F) {
	good, _ := Mint(secret, TokenOptions{Subject: "alice", TTL: time.Hour})
	for _, s := range []string{"Bearer " + good, "Bearer " + good + "x", "Bearer ....", "bearer a.b.c", "Basic x", "", "Bearer " + strings.Repeat(".", 10000)} {
		f.Add(s)
	}
	v, _ := NewVerifier(secret, "", "")
	f.Fuzz(func(t *testing.T, header string) {
		c, aerr := v.VerifyHeader(header)
		if aerr != nil {
			if aerr.Reason == "" || aerr.Description() == "" {
				t.Fatalf("error without reason: %+v", aerr)
			}
			return
		}
		if c.Subject == "" {
			t.Fatal("accepted a token without sub")
		}
		// Only what we signed verifies: the signature must be our secret's
		// HMAC of the signed part. (Comparing with good would not do: each
		// fuzz worker mints its own, with its own jti and iat.)
		tok, _ := BearerToken(header)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(signed(tok)))
		if tok[strings.LastIndexByte(tok, '.')+1:] != base64.RawURLEncoding.EncodeToString(mac.Sum(nil)) {
			t.Fatalf("accepted a token we did not sign: %q", header)
		}
	})
}

func signed(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	if i < 0 {
		return tok
	}
	return tok[:i]
}

// TestVerifiedCache: a cached token stops being accepted once it expires,
// and the claims a caller gets cannot change the cached ones.
func TestVerifiedCache(t *testing.T) {
	v, _ := NewVerifier(secret, "", "")
	now := time.Now()
	short, _ := Mint(secret, TokenOptions{Subject: "alice", TTL: time.Second, Now: now.Add(-Leeway - 2*time.Second), Scope: []string{ScopeRead}})
	// Issued in the past and expired beyond the leeway: refused, first time and every time.
	for range 2 {
		if _, aerr := v.Verify(short); aerr == nil || aerr.Reason != "expired" {
			t.Fatalf("expired token: %v", aerr)
		}
	}
	tok, _ := Mint(secret, TokenOptions{Subject: "alice", TTL: time.Hour, Scope: []string{ScopeRead}})
	c1, aerr := v.Verify(tok)
	if aerr != nil {
		t.Fatal(aerr)
	}
	*c1.Scope = "feedback:create"
	c1.Subject = "mallory"
	c1.ExpiresAt.Time = now.Add(-time.Hour)
	c2, aerr := v.Verify(tok)
	if aerr != nil || c2.Subject != "alice" || !c2.HasScope(ScopeRead) || c2.HasScope(ScopeCreate) || c2.ExpiresAt.Before(now) {
		t.Fatalf("cached claims were changed through a returned copy: %+v %v", c2, aerr)
	}
	// A cached entry past its expiry is dropped, not served.
	v.mu.Lock()
	v.verified[tok].claims.ExpiresAt.Time = now.Add(-time.Hour)
	v.mu.Unlock()
	if _, aerr := v.Verify(tok); aerr != nil {
		// the token itself is still valid: it is verified again from scratch
		t.Fatalf("re-verification failed: %v", aerr)
	}
}

func BenchmarkVerify(b *testing.B) {
	v, _ := NewVerifier(secret, "", "")
	tok, _ := Mint(secret, TokenOptions{Subject: "alice", TTL: time.Hour})
	for b.Loop() {
		if _, aerr := v.Verify(tok); aerr != nil {
			b.Fatal(aerr)
		}
	}
}
