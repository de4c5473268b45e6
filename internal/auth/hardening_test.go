package auth

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// sign makes an HS256 token with exactly these claims and header changes
// (a nil header value removes that header).
func sign(t *testing.T, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifierHardening: lifetime cap, aud without a configured audience,
// typ, and the jti deny-list, each refused with its own reason.
func TestVerifierHardening(t *testing.T) {
	now := time.Now()
	day := 24 * time.Hour
	claims := func(kv ...any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	plain, _ := NewVerifier(secret, "", "")
	withAud, _ := NewVerifier(secret, "", "feedback")
	shortCap, _ := NewVerifierWith(secret, VerifierOptions{MaxTTL: time.Hour})
	denying, _ := NewVerifierWith(secret, VerifierOptions{DeniedJTIs: []string{"revoked-1", " "}})
	for _, tc := range []struct {
		name   string
		v      *Verifier
		claims jwt.MapClaims
		header map[string]any
		want   string // "" accepted, else the Reason
	}{
		{"30 days", plain, claims("exp", now.Add(30*day).Unix()), nil, ""},
		{"31 days", plain, claims("exp", now.Add(31*day).Unix()), nil, "lifetime"},
		{"100 years", plain, claims("exp", now.Add(876000*time.Hour).Unix()), nil, "lifetime"},
		{"long ago issued, long lived", plain, claims("iat", now.Add(-40*day).Unix(), "exp", now.Add(time.Hour).Unix()), nil, "lifetime"},
		{"no iat, near exp", plain, claims("iat", nil), nil, ""},
		{"no iat, exp beyond the cap", plain, claims("iat", nil, "exp", now.Add(31*day).Unix()), nil, "lifetime"},
		{"configured cap", shortCap, claims("exp", now.Add(2*time.Hour).Unix()), nil, "lifetime"},
		{"configured cap, within", shortCap, claims(), nil, ""},

		{"aud without a configured audience", plain, claims("aud", "https://other.example"), nil, "audience"},
		{"aud list without a configured audience", plain, claims("aud", []string{"feedback"}), nil, "audience"},
		{"empty aud list", plain, claims("aud", []string{}), nil, ""},
		{"configured audience, missing", withAud, claims(), nil, "claims"},
		{"configured audience, wrong", withAud, claims("aud", "other"), nil, "audience"},
		{"configured audience, among others", withAud, claims("aud", []string{"other", "feedback"}), nil, ""},

		{"typ JWT", plain, claims(), map[string]any{"typ": "JWT"}, ""},
		{"typ jwt", plain, claims(), map[string]any{"typ": "jwt"}, ""},
		{"typ application/jwt", plain, claims(), map[string]any{"typ": "application/JWT"}, ""},
		{"no typ", plain, claims(), map[string]any{"typ": nil}, ""},
		{"typ at+jwt", plain, claims(), map[string]any{"typ": "at+jwt"}, "typ"},
		{"typ application/at+jwt", plain, claims(), map[string]any{"typ": "application/at+jwt"}, "typ"},
		{"typ logout", plain, claims(), map[string]any{"typ": "logout+jwt"}, "typ"},
		{"typ empty", plain, claims(), map[string]any{"typ": ""}, "typ"},
		{"typ not a string", plain, claims(), map[string]any{"typ": 1}, "typ"},

		{"denied jti", denying, claims("jti", "revoked-1"), nil, "revoked"},
		{"other jti", denying, claims("jti", "fine-2"), nil, ""},
		{"no jti", denying, claims(), nil, ""},
		{"blank deny-list entry", denying, claims("jti", " "), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(t, tc.claims, tc.header)
			for range 2 { // the second time from the verified-token cache, if it was accepted
				_, aerr := tc.v.Verify(tok)
				switch {
				case tc.want == "" && aerr != nil:
					t.Fatalf("refused: %v (%s)", aerr, aerr.Description())
				case tc.want != "" && aerr == nil:
					t.Fatalf("accepted, want %s", tc.want)
				case tc.want != "" && (aerr.Reason != tc.want || aerr.Code != "invalid_token" || aerr.Status() != http.StatusUnauthorized):
					t.Fatalf("%+v, want reason %s", aerr, tc.want)
				case aerr != nil && (aerr.Description() == "" || strings.Contains(aerr.Description(), tok)):
					t.Fatalf("description %q", aerr.Description())
				}
			}
		})
	}
}

func TestLifetimeDescriptionSaysWhy(t *testing.T) {
	now := time.Now()
	tok := sign(t, jwt.MapClaims{"sub": "a", "iat": now.Unix(), "exp": now.Add(876000 * time.Hour).Unix()}, nil)
	v, _ := NewVerifier(secret, "", "")
	_, aerr := v.Verify(tok)
	if aerr == nil || !strings.Contains(aerr.Description(), "accepts at most 720h0m0s") {
		t.Fatalf("%v: %q", aerr, aerr.Description())
	}
}

// TestBearerFrom: exactly one Authorization header; two are a bad request
// (400), not an authentication failure.
func TestBearerFrom(t *testing.T) {
	good, _ := Mint(secret, TokenOptions{Subject: "alice", TTL: time.Hour})
	v, _ := NewVerifier(secret, "", "")
	for _, tc := range []struct {
		name   string
		values []string
		reason string
		status int
	}{
		{"one", []string{"Bearer " + good}, "", 0},
		{"none", nil, "missing", 401},
		{"two", []string{"Bearer " + good, "Bearer " + good}, "duplicate_header", 400},
		{"two, one empty", []string{"Bearer " + good, ""}, "duplicate_header", 400},
		{"malformed", []string{"Basic abc"}, "malformed", 400},
		{"empty", []string{""}, "missing", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, val := range tc.values {
				h.Add("Authorization", val)
			}
			c, aerr := v.VerifyRequest(h)
			if tc.reason == "" {
				if aerr != nil || c.Subject != "alice" {
					t.Fatalf("%v %+v", aerr, c)
				}
				return
			}
			if aerr == nil || aerr.Reason != tc.reason || aerr.Status() != tc.status {
				t.Fatalf("%+v, want %s / %d", aerr, tc.reason, tc.status)
			}
			if tc.reason == "duplicate_header" && aerr.Code != "invalid_request" {
				t.Fatalf("code %q", aerr.Code)
			}
		})
	}
}

// TestMintLimits: minted lifetimes are capped, every token gets its own
// jti, scopes are checked, and feedback:answer is never a default.
func TestMintLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    TokenOptions
		ok   bool
	}{
		{"100 years", TokenOptions{Subject: "a", TTL: 876000 * time.Hour}, false},
		{"31 days", TokenOptions{Subject: "a", TTL: 31 * 24 * time.Hour}, false},
		{"30 days", TokenOptions{Subject: "a", TTL: DefaultMaxTTL}, true},
		{"raised cap", TokenOptions{Subject: "a", TTL: 60 * 24 * time.Hour, MaxTTL: 90 * 24 * time.Hour}, true},
		{"lowered cap", TokenOptions{Subject: "a", TTL: 2 * time.Hour, MaxTTL: time.Hour}, false},
		{"answer scope", TokenOptions{Subject: "a", TTL: time.Hour, Scope: []string{ScopeAnswer}}, true},
		{"unknown scope", TokenOptions{Subject: "a", TTL: time.Hour, Scope: []string{"feedback:admin"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Mint(secret, tc.o)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
		})
	}
	v, _ := NewVerifier(secret, "", "")
	ids := map[string]bool{}
	for range 3 {
		tok, _ := Mint(secret, TokenOptions{Subject: "a", TTL: time.Hour})
		c, aerr := v.Verify(tok)
		if aerr != nil || len(c.ID) != 26 || ids[c.ID] {
			t.Fatalf("jti %q: %v", c.ID, aerr)
		}
		ids[c.ID] = true
		if c.HasScope(ScopeAnswer) || !c.HasScope(ScopeCreate) || !c.HasScope(ScopeRead) {
			t.Fatalf("default scopes of %+v", c)
		}
	}
	tok, _ := Mint(secret, TokenOptions{Subject: "a", TTL: time.Hour, ID: "chosen"})
	denying, _ := NewVerifierWith(secret, VerifierOptions{DeniedJTIs: []string{"chosen"}})
	if _, aerr := denying.Verify(tok); aerr == nil || aerr.Reason != "revoked" {
		t.Fatalf("revoked jti: %v", aerr)
	}
	tok, _ = Mint(secret, TokenOptions{Subject: "a", TTL: time.Hour, Scope: []string{ScopeAnswer, ScopeRead}})
	if c, aerr := v.Verify(tok); aerr != nil || !c.HasScope(ScopeAnswer) || c.HasScope(ScopeCreate) {
		t.Fatalf("answer scope: %v %+v", aerr, c)
	}
}
