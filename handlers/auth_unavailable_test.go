package handlers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestKeysUnavailableIs503: while the identity provider's keys have not
// loaded (its discovery document is down), a token signed by it cannot be
// checked either way; the answer is 503 with Retry-After, not a 401 that
// would send the client through sign-in again.
func TestKeysUnavailableIs503(t *testing.T) {
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer idp.Close()
	v, err := auth.NewVerifierFrom(t.Context(), auth.Options{
		VerifierOptions: auth.VerifierOptions{Issuer: idp.URL, Audience: "https://fb.example"},
		JWKS:            auth.JWKSOptions{OIDCIssuer: idp.URL, InsecureLoopbackForTests: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	st := store.NewMemory()
	defer st.Close()
	svc := New(Config{Core: newCore(t, st, feedback.Config{}), Verifier: v, BaseURL: func(*http.Request) string { return "https://fb.example" }})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Issuer: idp.URL, Subject: "alice", Audience: jwt.ClaimStrings{"https://fb.example"},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)), IssuedAt: jwt.NewNumericDate(time.Now()),
	})
	tok.Header["kid"] = "k1"
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/api/feedback/create", strings.NewReader(`{"message":"Deploy?"}`))
	req.Header.Set("Authorization", "Bearer "+signed)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	svc.Create(w, req)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || w.Header().Get("WWW-Authenticate") != "" {
		t.Fatalf("create while the keys are unavailable: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if !strings.Contains(w.Body.String(), "keys have not been loaded") {
		t.Fatalf("the error does not say what is wrong: %s", w.Body)
	}
}
