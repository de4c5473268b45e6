package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const testAudience = "https://fb.example/mcp"

// testKey is a signing key of the test identity provider.
type testKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
	alg    string // the JWK's alg member; "" leaves it out, as Entra ID does
}

var (
	keysOnce            sync.Once
	rsaKey, rsaKey2     *rsa.PrivateKey
	ecKey               *ecdsa.PrivateKey
	edKey               ed25519.PrivateKey
	rsaSmall            *rsa.PrivateKey
	keysErr             error
	testRSA, testEC     testKey
	testEd, testRSANext testKey
	testRSA1024         testKey
)

// keys generates the test's keys once per run: RSA 2048, P-256, Ed25519.
func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			keysErr = err
			return
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			keysErr = err
			return
		}
		if rsaSmall, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			keysErr = err
			return
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			keysErr = err
			return
		}
		if _, edKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
			keysErr = err
			return
		}
		testRSA = testKey{"rsa-1", jwt.SigningMethodRS256, rsaKey, ""}
		testRSANext = testKey{"rsa-2", jwt.SigningMethodRS256, rsaKey2, "RS256"}
		testRSA1024 = testKey{"rsa-small", jwt.SigningMethodRS256, rsaSmall, "RS256"}
		testEC = testKey{"ec-1", jwt.SigningMethodES256, ecKey, "ES256"}
		testEd = testKey{"ed-1", jwt.SigningMethodEdDSA, edKey, ""}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
}

// jwksJSON is the JWKS document (RFC 7517 §5) of the public halves of ks.
func jwksJSON(t testing.TB, ks ...testKey) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, k := range ks {
		jwk, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			KID: k.kid, USE: jwkset.UseSig, ALG: jwkset.ALG(k.alg)}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testIdP is an identity provider served by httptest over TLS: an OpenID
// discovery document whose issuer is its own URL, and a JWKS that the test
// can swap while it runs. It counts JWKS fetches.
type testIdP struct {
	srv     *httptest.Server
	mu      sync.Mutex
	jwks    []byte
	fetches atomic.Int64
	// jwksHandler, when set, serves /jwks.json instead.
	jwksHandler http.HandlerFunc
	discovery   func(issuer string) any
}

func newTestIdP(t testing.TB, tlsOn bool, ks ...testKey) *testIdP {
	t.Helper()
	p := &testIdP{jwks: jwksJSON(t, ks...)}
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		h, body := p.jwksHandler, p.jwks
		p.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		d := p.discovery
		p.mu.Unlock()
		var doc any = map[string]string{"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/jwks.json"}
		if d != nil {
			doc = d(p.srv.URL)
		}
		if doc == nil {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(doc)
	})
	p.srv = httptest.NewUnstartedServer(mux)
	// The untrusted-certificate case makes handshakes fail on purpose.
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsOn {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testIdP) setJWKS(b []byte) {
	p.mu.Lock()
	p.jwks = b
	p.mu.Unlock()
}

func (p *testIdP) setJWKSHandler(h http.HandlerFunc) {
	p.mu.Lock()
	p.jwksHandler = h
	p.mu.Unlock()
}

func (p *testIdP) setDiscovery(d func(issuer string) any) {
	p.mu.Lock()
	p.discovery = d
	p.mu.Unlock()
}

func (p *testIdP) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.srv.Certificate())
	return pool
}

// verifier is a JWKS-mode verifier discovering p (Issuer defaults to the
// discovery issuer, p's URL).
func (p *testIdP) verifier(t testing.TB, mod ...func(*Options)) *Verifier {
	t.Helper()
	o := Options{VerifierOptions: VerifierOptions{Audience: testAudience},
		JWKS: JWKSOptions{OIDCIssuer: p.srv.URL, RootCAs: p.roots()}}
	for _, m := range mod {
		m(&o)
	}
	v, err := NewVerifierFrom(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// idpClaims are valid claims for p's tokens; kv changes them (nil removes).
func idpClaims(iss string, kv ...any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": iss, "sub": "alice@idp", "aud": []string{testAudience, "other-api"},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "feedback:create feedback:read", "jti": "j-" + rand.Text()}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

// signWith signs claims with k (header kid = k.kid), then applies header
// changes (nil removes).
func signWith(t testing.TB, k testKey, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.kid
	for h, val := range header {
		if val == nil {
			delete(tok.Header, h)
		} else {
			tok.Header[h] = val
		}
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forge builds a compact JWS with exactly this header, signed by method
// with key over the real signing input: what an attacker controls.
func forge(t testing.TB, header map[string]any, claims jwt.MapClaims, method jwt.SigningMethod, key any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	if method == nil {
		return input + "."
	}
	sig, err := method.Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func pemOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// TestJWKSVerify: RS256, ES256 and EdDSA tokens from the provider are
// accepted; every hostile or wrong one is refused with its reason.
func TestJWKSVerify(t *testing.T) {
	keys(t)
	idp := newTestIdP(t, true, testRSA, testEC, testEd, testRSA1024)
	v := idp.verifier(t, func(o *Options) { o.DeniedJTIs = []string{"revoked"}; o.MaxTTL = 24 * time.Hour })
	iss := idp.srv.URL
	c := func(kv ...any) jwt.MapClaims { return idpClaims(iss, kv...) }
	jwksDoc := jwksJSON(t, testRSA, testEC, testEd)
	hs := func(key []byte, header map[string]any) string {
		return forge(t, header, c(), jwt.SigningMethodHS256, key)
	}
	for _, tc := range []struct {
		name  string
		token string
		want  string // "" accepted, else the Reason
	}{
		{"RS256, key without alg", signWith(t, testRSA, c(), nil), ""},
		{"ES256", signWith(t, testEC, c(), nil), ""},
		{"EdDSA", signWith(t, testEd, c(), nil), ""},
		{"typ at+jwt (RFC 9068)", signWith(t, testRSA, c(), map[string]any{"typ": "at+jwt"}), ""},
		{"typ application/at+jwt", signWith(t, testEC, c(), map[string]any{"typ": "application/at+jwt"}), ""},
		{"typ JWT", signWith(t, testEd, c(), map[string]any{"typ": "JWT"}), ""},
		{"aud a string", signWith(t, testRSA, c("aud", testAudience), nil), ""},
		{"no kid: the key whose algorithm fits", signWith(t, testEC, c(), map[string]any{"kid": nil}), ""},

		{"alg none", forge(t, map[string]any{"alg": "none", "kid": "rsa-1"}, c(), nil, nil), "algorithm"},
		{"HS256 with the JWKS JSON as secret", hs(jwksDoc, map[string]any{"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}), "algorithm"},
		{"HS256 with the RSA public key PEM as secret", hs(pemOf(t, rsaKey.Public()), map[string]any{"alg": "HS256", "kid": "rsa-1"}), "algorithm"},
		{"HS256 without kid", hs(jwksDoc, map[string]any{"alg": "HS256"}), "algorithm"},
		{"RS256 signature, header says ES256", forge(t, map[string]any{"alg": "ES256", "kid": "rsa-1"}, c(), jwt.SigningMethodRS256, rsaKey), "algorithm"},
		{"PS256 with an RSA key that implies RS256", signWith(t, testKey{"rsa-1", jwt.SigningMethodPS256, rsaKey, ""}, c(), nil), "algorithm"},
		{"ES256 header naming the Ed25519 key", signWith(t, testKey{"ed-1", jwt.SigningMethodES256, ecKey, ""}, c(), nil), "algorithm"},
		{"RSA key under 2048 bits", signWith(t, testRSA1024, c(), nil), "algorithm"},
		{"signed by a key not in the JWKS, known kid", signWith(t, testKey{"rsa-1", jwt.SigningMethodRS256, rsaKey2, ""}, c(), nil), "signature"},
		{"unknown kid", signWith(t, testKey{"nope", jwt.SigningMethodRS256, rsaKey2, ""}, c(), nil), "unknown_kid"},
		{"kid not a string", signWith(t, testRSA, c(), map[string]any{"kid": 7}), "unknown_kid"},
		{"expired", signWith(t, testRSA, c("iat", time.Now().Add(-2*time.Hour).Unix(), "exp", time.Now().Add(-time.Hour).Unix()), nil), "expired"},
		{"no exp", signWith(t, testRSA, c("exp", nil), nil), "claims"},
		{"iat in the future", signWith(t, testRSA, c("iat", time.Now().Add(time.Hour).Unix()), nil), "not_yet_valid"},
		{"wrong iss", signWith(t, testRSA, c("iss", "https://evil.example"), nil), "claims"},
		{"no iss", signWith(t, testRSA, c("iss", nil), nil), "claims"},
		{"wrong aud", signWith(t, testRSA, c("aud", "https://other.example"), nil), "audience"},
		{"no aud", signWith(t, testRSA, c("aud", nil), nil), "claims"},
		{"no sub", signWith(t, testRSA, c("sub", nil), nil), "claims"},
		{"lifetime over the cap", signWith(t, testRSA, c("exp", time.Now().Add(48*time.Hour).Unix()), nil), "lifetime"},
		{"revoked jti", signWith(t, testRSA, c("jti", "revoked"), nil), "revoked"},
		{"crit header", signWith(t, testRSA, c(), map[string]any{"crit": []string{"exp"}}), "crit"},
		{"typ dpop+jwt", signWith(t, testRSA, c(), map[string]any{"typ": "dpop+jwt"}), "typ"},
		{"jku header is ignored, key still from the JWKS", signWith(t, testKey{"nope2", jwt.SigningMethodRS256, rsaKey2, ""}, c(), map[string]any{"jku": "https://evil.example/jwks"}), "unknown_kid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims, aerr := v.Verify(tc.token)
			switch {
			case tc.want == "" && aerr != nil:
				t.Fatalf("refused: %v", aerr)
			case tc.want == "":
				if claims.Subject != "alice@idp" || claims.Issuer != iss || !claims.HasScope(ScopeRead) {
					t.Fatalf("claims %+v", claims)
				}
			case aerr == nil:
				t.Fatal("accepted")
			case aerr.Reason != tc.want:
				t.Fatalf("reason %q (%v), want %q", aerr.Reason, aerr, tc.want)
			case aerr.Status() != http.StatusUnauthorized || strings.Contains(aerr.Description(), tc.token[:16]):
				t.Fatalf("status %d, description %q", aerr.Status(), aerr.Description())
			}
		})
	}
}

// TestJWKSUnknownKIDRefetch: an unknown kid makes one refetch and is then
// refused; a flood of unknown kids (concurrent, then sequential) makes no
// more fetches within the minute.
func TestJWKSUnknownKIDRefetch(t *testing.T) {
	keys(t)
	idp := newTestIdP(t, true, testRSA)
	v := idp.verifier(t)
	if n := idp.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	iss := idp.srv.URL
	unknown := func(i int) string {
		return signWith(t, testKey{fmt.Sprintf("made-up-%d", i), jwt.SigningMethodRS256, rsaKey, ""}, idpClaims(iss), nil)
	}
	if _, aerr := v.Verify(unknown(0)); aerr == nil || aerr.Reason != "unknown_kid" {
		t.Fatalf("unknown kid: %v", aerr)
	}
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after one unknown kid, want 2 (one refetch)", n)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if _, aerr := v.Verify(unknown(i + 1)); aerr == nil || aerr.Reason != "unknown_kid" {
				t.Errorf("unknown kid %d: %v", i, aerr)
			}
		})
	}
	wg.Wait()
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a flood of unknown kids, want still 2", n)
	}
	// A known kid still works during the flood, without fetching.
	if _, aerr := v.Verify(signWith(t, testRSA, idpClaims(iss), nil)); aerr != nil {
		t.Fatal(aerr)
	}
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches", n)
	}
}

// TestJWKSUnknownKIDRate: with a short interval, the next unknown kid after
// it has passed refetches again: one fetch per interval, not one ever.
func TestJWKSUnknownKIDRate(t *testing.T) {
	keys(t)
	idp := newTestIdP(t, true, testRSA)
	v := idp.verifier(t, func(o *Options) { o.JWKS.UnknownKIDEvery = time.Second })
	tok := signWith(t, testKey{"later", jwt.SigningMethodRS256, rsaKey, ""}, idpClaims(idp.srv.URL), nil)
	for range 5 {
		_, _ = v.Verify(tok)
	}
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// Once the interval has passed, an unknown kid refetches again: keep
	// presenting it (bounded) until it does, then it is once more one
	// fetch for the interval, however many tokens come.
	deadline := time.Now().Add(5 * time.Second)
	for idp.fetches.Load() < 3 && time.Now().Before(deadline) {
		_, _ = v.Verify(tok)
		time.Sleep(20 * time.Millisecond)
	}
	for range 5 {
		_, _ = v.Verify(tok)
	}
	if n := idp.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches after the interval, want 3", n)
	}
}

// TestJWKSKeyRotation: the provider swaps its key while the verifier runs;
// a token with the new kid verifies after one refetch, and a new token with
// the retired kid is refused, and so is a token of it that was verified
// (and cached) before the rotation.
func TestJWKSKeyRotation(t *testing.T) {
	keys(t)
	idp := newTestIdP(t, true, testRSA)
	v := idp.verifier(t)
	iss := idp.srv.URL
	old := signWith(t, testRSA, idpClaims(iss), nil)
	for range 2 { // the second from the cache of verified tokens
		if _, aerr := v.Verify(old); aerr != nil {
			t.Fatal(aerr)
		}
	}
	idp.setJWKS(jwksJSON(t, testRSANext))
	if _, aerr := v.Verify(signWith(t, testRSANext, idpClaims(iss), nil)); aerr != nil {
		t.Fatalf("new kid after rotation: %v", aerr)
	}
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (start, one refetch)", n)
	}
	if _, aerr := v.Verify(signWith(t, testRSA, idpClaims(iss), nil)); aerr == nil || aerr.Reason != "unknown_kid" {
		t.Fatalf("retired kid: %v", aerr)
	}
	if _, aerr := v.Verify(old); aerr == nil || aerr.Reason != "unknown_kid" {
		t.Fatalf("a token of the retired kid verified before the rotation: %v, want unknown_kid", aerr)
	}
}

// TestJWKSRefreshKeepsVerifiedTokens: a background refresh that brings the
// same keys again leaves the key-set generation (and so the cache of
// verified tokens) as it was; one that brings other keys moves it.
func TestJWKSRefreshKeepsVerifiedTokens(t *testing.T) {
	keys(t)
	idp := newTestIdP(t, true, testRSA)
	v, err := NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Audience: testAudience},
		JWKS: JWKSOptions{OIDCIssuer: idp.srv.URL, RootCAs: idp.roots(), RefreshInterval: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, aerr := v.Verify(signWith(t, testRSA, idpClaims(idp.srv.URL), nil)); aerr != nil {
		t.Fatal(aerr)
	}
	gen := v.modes.remote.generation()
	for start, deadline := idp.fetches.Load(), time.Now().Add(5*time.Second); idp.fetches.Load() < start+3; {
		if time.Now().After(deadline) {
			t.Fatal("no background refresh")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g := v.modes.remote.generation(); g != gen {
		t.Fatalf("refreshes of the same keys moved the generation %d → %d", gen, g)
	}
	idp.setJWKS(jwksJSON(t, testRSA, testRSANext))
	deadline := time.Now().Add(5 * time.Second)
	for v.modes.remote.generation() == gen {
		if time.Now().After(deadline) {
			t.Fatal("a refresh with a new key left the generation")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJWKSBackgroundRefreshAndClose: the background refresh runs, and Close
// (or the end of the context) stops it.
func TestJWKSBackgroundRefreshAndClose(t *testing.T) {
	keys(t)
	for _, how := range []string{"Close", "context"} {
		t.Run(how, func(t *testing.T) {
			idp := newTestIdP(t, true, testRSA)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			v, err := NewVerifierFrom(ctx, Options{VerifierOptions: VerifierOptions{Audience: testAudience},
				JWKS: JWKSOptions{OIDCIssuer: idp.srv.URL, RootCAs: idp.roots(), RefreshInterval: 20 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			deadline := time.Now().Add(5 * time.Second)
			for idp.fetches.Load() < 4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := idp.fetches.Load(); n < 4 {
				t.Fatalf("%d fetches: no background refresh", n)
			}
			if how == "Close" {
				v.Close()
				v.Close() // idempotent
			} else {
				cancel()
			}
			// A refresh already under way may still finish: wait (bounded)
			// until the count holds still for a few refresh intervals,
			// then watch that it stays so.
			n := idp.fetches.Load()
			for settled := time.Now().Add(5 * time.Second); ; {
				time.Sleep(60 * time.Millisecond)
				m := idp.fetches.Load()
				if m == n {
					break
				}
				if time.Now().After(settled) {
					t.Fatalf("fetches still going on after %s: %d → %d", how, n, m)
				}
				n = m
			}
			time.Sleep(150 * time.Millisecond)
			if m := idp.fetches.Load(); m != n {
				t.Fatalf("fetches went on after %s: %d → %d", how, n, m)
			}
		})
	}
}

// TestJWKSFetchHardening: oversized documents, redirects to another host,
// http without the test switch, a discovery document naming another issuer
// or an http jwks_uri.
func TestJWKSFetchHardening(t *testing.T) {
	keys(t)
	okTok := func(idp *testIdP) string { return signWith(t, testRSA, idpClaims(idp.srv.URL), nil) }

	t.Run("oversized JWKS", func(t *testing.T) {
		for _, chunked := range []bool{false, true} {
			idp := newTestIdP(t, true, testRSA)
			big := jwksJSON(t, testRSA)
			big = append(big[:len(big)-1], []byte(`,"pad":"`+strings.Repeat("x", DefaultJWKSMaxBytes)+`"}`)...)
			idp.setJWKSHandler(func(w http.ResponseWriter, _ *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", fmt.Sprint(len(big)))
				}
				_, _ = w.Write(big[:len(big)/2])
				w.(http.Flusher).Flush()
				_, _ = w.Write(big[len(big)/2:])
			})
			core, logs := observer.New(zap.WarnLevel)
			v := idp.verifier(t, func(o *Options) { o.JWKS.Logger = zap.New(core) })
			if _, aerr := v.Verify(okTok(idp)); aerr == nil {
				t.Fatalf("chunked=%v: a token was verified with keys from an oversized JWKS", chunked)
			}
			if logs.FilterMessageSnippet("fetching the JWKS failed").Len() == 0 {
				t.Fatalf("chunked=%v: no warning logged", chunked)
			}
		}
	})

	t.Run("JWKS at the cap", func(t *testing.T) {
		idp := newTestIdP(t, true, testRSA)
		doc := jwksJSON(t, testRSA)
		v := idp.verifier(t, func(o *Options) { o.JWKS.MaxBytes = int64(len(doc)) })
		if _, aerr := v.Verify(okTok(idp)); aerr != nil {
			t.Fatal(aerr)
		}
		w := idp.verifier(t, func(o *Options) { o.JWKS.MaxBytes = int64(len(doc)) - 1 })
		if _, aerr := w.Verify(okTok(idp)); aerr == nil {
			t.Fatal("a JWKS one byte over the cap was used")
		}
	})

	t.Run("JWKS redirecting to another host", func(t *testing.T) {
		evil := newTestIdP(t, true, testRSA) // serves the right keys even: the redirect alone is refused
		idp := newTestIdP(t, true)
		idp.setJWKSHandler(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, evil.srv.URL+"/jwks.json", http.StatusFound)
		})
		v := idp.verifier(t, func(o *Options) { o.JWKS.RootCAs.AddCert(evil.srv.Certificate()) })
		if _, aerr := v.Verify(okTok(idp)); aerr == nil {
			t.Fatal("keys fetched through a redirect to another host were used")
		}
		if n := evil.fetches.Load(); n != 0 {
			t.Fatalf("the other host was asked %d times", n)
		}
	})

	t.Run("JWKS redirecting on the same host", func(t *testing.T) {
		idp := newTestIdP(t, true, testRSA)
		idp.setDiscovery(func(iss string) any { return map[string]string{"issuer": iss, "jwks_uri": iss + "/old-jwks"} })
		idp.srv.Config.Handler.(*http.ServeMux).HandleFunc("/old-jwks", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/jwks.json", http.StatusMovedPermanently)
		})
		v := idp.verifier(t)
		if _, aerr := v.Verify(okTok(idp)); aerr != nil {
			t.Fatal(aerr)
		}
	})

	t.Run("http JWKS without the test switch", func(t *testing.T) {
		idp := newTestIdP(t, false, testRSA)
		for _, o := range []JWKSOptions{{URL: idp.srv.URL + "/jwks.json"}, {OIDCIssuer: idp.srv.URL}} {
			_, err := NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Issuer: idp.srv.URL, Audience: testAudience}, JWKS: o})
			if !errors.Is(err, ErrRemoteConfig) || !strings.Contains(err.Error(), "https") {
				t.Fatalf("%+v: %v", o, err)
			}
		}
		if idp.fetches.Load() != 0 {
			t.Fatal("fetched over http")
		}
	})

	t.Run("http JWKS on loopback with the test switch", func(t *testing.T) {
		idp := newTestIdP(t, false, testRSA)
		v, err := NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Audience: testAudience},
			JWKS: JWKSOptions{OIDCIssuer: idp.srv.URL, InsecureLoopbackForTests: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if _, aerr := v.Verify(okTok(idp)); aerr != nil {
			t.Fatal(aerr)
		}
		_, err = NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Issuer: "x", Audience: testAudience},
			JWKS: JWKSOptions{URL: "http://idp.example/jwks.json", InsecureLoopbackForTests: true}})
		if !errors.Is(err, ErrRemoteConfig) {
			t.Fatalf("the switch allowed http to a non-loopback host: %v", err)
		}
	})

	t.Run("discovery naming another issuer", func(t *testing.T) {
		idp := newTestIdP(t, true, testRSA)
		idp.setDiscovery(func(iss string) any {
			return map[string]string{"issuer": "https://evil.example", "jwks_uri": iss + "/jwks.json"}
		})
		_, err := NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Audience: testAudience},
			JWKS: JWKSOptions{OIDCIssuer: idp.srv.URL, RootCAs: idp.roots()}})
		if !errors.Is(err, ErrRemoteConfig) || !strings.Contains(err.Error(), "evil.example") {
			t.Fatal(err)
		}
	})

	t.Run("discovery with an http jwks_uri", func(t *testing.T) {
		idp := newTestIdP(t, true, testRSA)
		idp.setDiscovery(func(iss string) any {
			return map[string]string{"issuer": iss, "jwks_uri": strings.Replace(iss, "https", "http", 1) + "/jwks.json"}
		})
		_, err := NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Audience: testAudience},
			JWKS: JWKSOptions{OIDCIssuer: idp.srv.URL, RootCAs: idp.roots()}})
		if !errors.Is(err, ErrRemoteConfig) {
			t.Fatal(err)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		idp := newTestIdP(t, true, testRSA)
		v, err := NewVerifierFrom(t.Context(), Options{VerifierOptions: VerifierOptions{Audience: testAudience, Issuer: idp.srv.URL},
			JWKS: JWKSOptions{URL: idp.srv.URL + "/jwks.json"}}) // system roots only
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if _, aerr := v.Verify(okTok(idp)); aerr == nil {
			t.Fatal("keys from a server with an untrusted certificate were used")
		}
	})
}

// TestJWKSDiscoveryRetry: when the provider is down at start, the verifier
// starts anyway, refuses tokens (keys_unavailable), and picks the keys up
// once discovery succeeds.
func TestJWKSDiscoveryRetry(t *testing.T) {
	keys(t)
	old := discoveryRetry
	discoveryRetry = 50 * time.Millisecond
	defer func() { discoveryRetry = old }()
	idp := newTestIdP(t, true, testEC)
	var down atomic.Bool
	down.Store(true)
	idp.setDiscovery(func(iss string) any {
		if down.Load() {
			return nil
		}
		return map[string]string{"issuer": iss, "jwks_uri": iss + "/jwks.json"}
	})
	v := idp.verifier(t)
	tok := signWith(t, testEC, idpClaims(idp.srv.URL), nil)
	if _, aerr := v.Verify(tok); aerr == nil || aerr.Reason != "keys_unavailable" {
		t.Fatalf("while down: %v", aerr)
	}
	down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, aerr := v.Verify(tok)
		if aerr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys never arrived: %v", aerr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJWKSKeyAlg: the algorithm comes from the key.
func TestJWKSKeyAlg(t *testing.T) {
	keys(t)
	mk := func(pub any, md jwkset.JWKMetadataOptions) jwkset.JWK {
		t.Helper()
		jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		return jwk
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	oct, err := jwkset.NewJWKFromKey([]byte(strings.Repeat("k", 32)), jwkset.JWKOptions{Marshal: jwkset.JWKMarshalOptions{Private: true}, Metadata: jwkset.JWKMetadataOptions{KID: "oct"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		jwk  jwkset.JWK
		want string
	}{
		{"RSA without alg", mk(rsaKey.Public(), jwkset.JWKMetadataOptions{}), "RS256"},
		{"RSA with alg PS256", mk(rsaKey.Public(), jwkset.JWKMetadataOptions{ALG: jwkset.AlgPS256}), "PS256"},
		{"RSA with alg ES256", mk(rsaKey.Public(), jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256}), ""},
		{"RSA with alg HS256", mk(rsaKey.Public(), jwkset.JWKMetadataOptions{ALG: jwkset.AlgHS256}), ""},
		{"RSA encryption key", mk(rsaKey.Public(), jwkset.JWKMetadataOptions{USE: jwkset.UseEnc}), ""},
		{"RSA-OAEP alg", mk(rsaKey.Public(), jwkset.JWKMetadataOptions{ALG: jwkset.AlgRSAOAEP}), ""},
		{"RSA 1024", mk(rsaSmall.Public(), jwkset.JWKMetadataOptions{}), ""},
		{"P-256", mk(ecKey.Public(), jwkset.JWKMetadataOptions{}), "ES256"},
		{"P-384", mk(p384.Public(), jwkset.JWKMetadataOptions{}), "ES384"},
		{"P-384 claiming ES256", mk(p384.Public(), jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256}), ""},
		{"Ed25519", mk(edKey.Public(), jwkset.JWKMetadataOptions{}), "EdDSA"},
		{"private RSA key in the set: its public half", mk(rsaKey, jwkset.JWKMetadataOptions{}), "RS256"},
		{"symmetric oct key", oct, ""},
	} {
		if got, _ := keyAlg(tc.jwk); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestMixedModes: shared secret and JWKS at once. HS256 tokens go to the
// secrets only, asymmetric ones to the JWKS only; an HS256 token never
// meets an RSA key, and may not claim the provider's issuer.
func TestMixedModes(t *testing.T) {
	keys(t)
	idp := newTestIdP(t, true, testRSA, testEC)
	iss := idp.srv.URL
	old := []byte("old-secret-0123456789abcdef012345")
	v := idp.verifier(t, func(o *Options) { o.Secret = secret; o.PreviousSecrets = [][]byte{old} })
	if !v.JWKSMode() {
		t.Fatal("not in JWKS mode")
	}
	mint := func(s []byte, o TokenOptions) string {
		o.Subject, o.TTL = "agent-1", time.Hour
		if o.Audience == "" {
			o.Audience = testAudience
		}
		tok, err := Mint(s, o)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hsClaims := jwt.MapClaims{"sub": "x", "aud": testAudience, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"HS256 by the secret", mint(secret, TokenOptions{}), ""},
		{"HS256 by the previous secret", mint(old, TokenOptions{}), ""},
		{"HS256 with its own issuer", mint(secret, TokenOptions{Issuer: "https://ops.example"}), ""},
		{"RS256 by the provider", signWith(t, testRSA, idpClaims(iss), nil), ""},
		{"ES256 by the provider", signWith(t, testEC, idpClaims(iss), nil), ""},
		{"HS256 claiming the provider's issuer", mint(secret, TokenOptions{Issuer: iss}), "claims"},
		{"HS256 without our audience", mint(secret, TokenOptions{Audience: "other"}), "audience"},
		{"HS256 with the provider's kid, signed with the JWKS JSON", forge(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, hsClaims, jwt.SigningMethodHS256, jwksJSON(t, testRSA, testEC)), "unknown_kid"},
		{"HS256 with the provider's kid, signed with the secret", forge(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, hsClaims, jwt.SigningMethodHS256, secret), "unknown_kid"},
		{"HS256 without kid, signed with the RSA PEM", forge(t, map[string]any{"alg": "HS256"}, hsClaims, jwt.SigningMethodHS256, pemOf(t, rsaKey.Public())), "signature"},
		{"HS512 by the secret", forge(t, map[string]any{"alg": "HS512"}, hsClaims, jwt.SigningMethodHS512, secret), "algorithm"},
		{"alg none", forge(t, map[string]any{"alg": "none"}, hsClaims, nil, nil), "algorithm"},
		{"RS256 naming an HS kid", signWith(t, testKey{SecretKeyID(secret), jwt.SigningMethodRS256, rsaKey, ""}, idpClaims(iss), nil), "unknown_kid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, aerr := v.Verify(tc.token)
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

// TestNewVerifierFromRequirements: what each mode needs.
func TestNewVerifierFromRequirements(t *testing.T) {
	short := []byte("too-short")
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"nothing", Options{}, "shared secret or a JWKS"},
		{"short secret", Options{Secret: short}, "at least 32 bytes"},
		{"short previous secret", Options{Secret: secret, PreviousSecrets: [][]byte{short}}, "previous secret 1"},
		{"previous without current", Options{PreviousSecrets: [][]byte{secret}, JWKS: JWKSOptions{URL: "https://idp.example/jwks"}}, "need a current secret"},
		{"JWKS URL without issuer", Options{VerifierOptions: VerifierOptions{Audience: "a"}, JWKS: JWKSOptions{URL: "https://idp.example/jwks"}}, "issuer is required"},
		{"JWKS without audience", Options{VerifierOptions: VerifierOptions{Issuer: "i"}, JWKS: JWKSOptions{URL: "https://idp.example/jwks"}}, "audience is required"},
		{"both URL and issuer", Options{VerifierOptions: VerifierOptions{Issuer: "i", Audience: "a"}, JWKS: JWKSOptions{URL: "https://idp.example/jwks", OIDCIssuer: "https://idp.example"}}, "either"},
		{"URL with user info", Options{VerifierOptions: VerifierOptions{Issuer: "i", Audience: "a"}, JWKS: JWKSOptions{URL: "https://u:p@idp.example/jwks"}}, "user info"},
	} {
		_, err := NewVerifierFrom(t.Context(), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
