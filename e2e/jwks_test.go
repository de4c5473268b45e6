package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
)

// e2eIdP is an identity provider run by the test: OpenID discovery and a
// JWKS (RS256 and ES256 keys it generates), over HTTPS with httptest's
// certificate, which Caddy trusts through SSL_CERT_FILE.
type e2eIdP struct {
	srv          *httptest.Server
	rsa          *rsa.PrivateKey
	ec           *ecdsa.PrivateKey
	jwks         []byte
	jwksFetches  atomic.Int64
	certFile     string
	audience     string
	insecureHTTP *httptest.Server // the same JWKS over plain http, for the loopback test switch
}

func newE2EIdP(t *testing.T) *e2eIdP {
	t.Helper()
	p := &e2eIdP{audience: "https://feedback.example/mcp"}
	var err error
	if p.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	var set jwkset.JWKSMarshal
	for kid, pub := range map[string]crypto.PublicKey{"rsa-1": p.rsa.Public(), "ec-1": p.ec.Public()} {
		jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	if p.jwks, err = json.Marshal(set); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		p.jwksFetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(p.jwks)
	})
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/jwks.json",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"}})
	})
	p.srv = httptest.NewUnstartedServer(mux)
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.insecureHTTP = httptest.NewServer(mux)
	t.Cleanup(p.insecureHTTP.Close)
	p.certFile = filepath.Join(t.TempDir(), "idp-ca.pem")
	if err := os.WriteFile(p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// token is an access token from the provider, as Keycloak or Entra ID
// would mint one (typ at+jwt, aud naming this server and another).
func (p *e2eIdP) token(t *testing.T, method jwt.SigningMethod, kid string, key crypto.Signer, sub string) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(method, jwt.MapClaims{"iss": p.srv.URL, "sub": sub, "aud": []string{p.audience, "account"},
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "scope": "openid feedback:create feedback:read", "azp": "agent-cli"})
	tok.Header["kid"], tok.Header["typ"] = kid, "at+jwt"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwksSites(opts string) string {
	return `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
` + opts + `	}
	respond "next handler" 200
}
`
}

// TestJWKSTokens: the real Caddy binary with jwt_oidc_issuer pointing at a
// provider served by the test over HTTPS. RS256 and ES256 access tokens
// from it ask questions; HS256 tokens are refused (in JWKS-only mode all of
// them, in mixed mode those that claim the provider's issuer). A reload to
// mixed mode with a rotated secret accepts tokens of the current and the
// previous secret; the loopback test switch logs its warning.
func TestJWKSTokens(t *testing.T) {
	idp := newE2EIdP(t)
	const oldSecret = "e2e-old-secret-0123456789abcdef0123456789"
	c := newCaddy(t, "SSL_CERT_FILE="+idp.certFile, "IDP_ISSUER="+idp.srv.URL, "OLD_JWT_SECRET="+oldSecret)
	c.start(jwksSites("\t\tjwt_oidc_issuer {env.IDP_ISSUER}\n\t\tjwt_audience " + idp.audience + "\n"))
	if n := idp.jwksFetches.Load(); n < 1 {
		t.Fatalf("Caddy did not fetch the JWKS at start (%d fetches)", n)
	}

	rs := idp.token(t, jwt.SigningMethodRS256, "rsa-1", idp.rsa, "alice")
	es := idp.token(t, jwt.SigningMethodES256, "ec-1", idp.ec, "alice")
	body := `{"message":"Ship it?","predefinedOptions":["yes","no"]}`
	for name, tok := range map[string]string{"RS256": rs, "ES256": es} {
		cr, _ := createSession(t, c.Client, c.HTTP, tok, body)
		// Both tokens are alice at the same issuer: one owner.
		for _, other := range []string{rs, es} {
			if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+other); r.Status != 200 {
				t.Fatalf("%s session, status: %d %s", name, r.Status, r.Body)
			}
		}
	}

	refused := func(what, tok string) {
		t.Helper()
		r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", body, "Authorization", "Bearer "+tok)
		if r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("%s: %d %s %v, want 401 invalid_token", what, r.Status, r.Body, r.Header.Get("WWW-Authenticate"))
		}
	}
	hsSameClaims, err := auth.Mint([]byte(secret), auth.TokenOptions{Subject: "alice", TTL: time.Hour, Issuer: idp.srv.URL, Audience: idp.audience})
	if err != nil {
		t.Fatal(err)
	}
	refused("HS256 token with the provider's iss and our aud", hsSameClaims)
	refused("HS256 token signed with the JWKS JSON", hsWithKey(t, idp, idp.jwks, "rsa-1"))
	refused("expired RS256 token", func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": idp.srv.URL, "sub": "alice", "aud": idp.audience,
			"iat": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-30 * time.Minute).Unix()})
		tok.Header["kid"] = "rsa-1"
		s, _ := tok.SignedString(idp.rsa)
		return s
	}())
	var md struct {
		AuthorizationServers []string `json:"authorization_servers"`
	}
	r := do(t, c.Client, "GET", c.HTTP+"/.well-known/oauth-protected-resource", "")
	if err := json.Unmarshal([]byte(r.Body), &md); err != nil || len(md.AuthorizationServers) != 1 || md.AuthorizationServers[0] != idp.srv.URL {
		t.Fatalf("resource metadata: %d %s", r.Status, r.Body)
	}

	// Mixed mode during a migration, with a rotated secret.
	c.reload(jwksSites("\t\tjwt_secret {env.JWT_SECRET}\n\t\tjwt_previous_secrets {env.OLD_JWT_SECRET}\n" +
		"\t\tjwt_oidc_issuer {env.IDP_ISSUER}\n\t\tjwt_audience " + idp.audience + "\n"))
	for name, tok := range map[string]string{
		"RS256":           idp.token(t, jwt.SigningMethodRS256, "rsa-1", idp.rsa, "bob"),
		"current secret":  mintE2E(t, secret, idp.audience),
		"previous secret": mintE2E(t, oldSecret, idp.audience),
	} {
		if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", body, "Authorization", "Bearer "+tok); r.Status != 201 {
			t.Fatalf("mixed mode, %s: %d %s", name, r.Status, r.Body)
		}
	}
	refused("mixed mode, HS256 claiming the provider's issuer", hsSameClaims)
	refused("mixed mode, HS256 naming the provider's kid", hsWithKey(t, idp, []byte(secret), "rsa-1"))

	// The test-only switch: plain http on loopback, with a warning.
	c.reload(jwksSites("\t\tjwt_jwks " + idp.insecureHTTP.URL + "/jwks.json\n\t\tjwt_jwks_insecure_loopback_for_tests\n" +
		"\t\tjwt_issuer {env.IDP_ISSUER}\n\t\tjwt_audience " + idp.audience + "\n"))
	createSession(t, c.Client, c.HTTP, idp.token(t, jwt.SigningMethodES256, "ec-1", idp.ec, "carol"), body)
	if !eventually(5*time.Second, func() bool { return strings.Contains(c.logs.String(), "jwt_jwks_insecure_loopback_for_tests is on") }) {
		t.Fatal("no warning about the loopback test switch in the log")
	}
}

// TestJWKSRefusedConfigs: Caddy refuses to load a JWKS over http without
// the test switch, and a discovery issuer that is not the configured one.
func TestJWKSRefusedConfigs(t *testing.T) {
	idp := newE2EIdP(t)
	c := newCaddy(t, "SSL_CERT_FILE="+idp.certFile)
	for name, tc := range map[string]struct{ opts, want string }{
		"http JWKS":                    {"\t\tjwt_jwks " + idp.insecureHTTP.URL + "/jwks.json\n\t\tjwt_issuer x\n\t\tjwt_audience a\n", "must be https"},
		"issuer with a trailing slash": {"\t\tjwt_oidc_issuer " + idp.srv.URL + "/\n\t\tjwt_audience a\n", "names the issuer"},
		"no audience":                  {"\t\tjwt_oidc_issuer " + idp.srv.URL + "\n", "jwt_audience is required"},
	} {
		path := c.writeConfig(jwksSites(tc.opts))
		out, err := caddyCmd(t, c.env, "validate", "--config", path, "--adapter", "caddyfile")
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: validate (err %v) did not say %q:\n%s", name, err, tc.want, tail(out, 800))
		}
	}
}

func mintE2E(t *testing.T, key, aud string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(key), auth.TokenOptions{Subject: "ops-agent", TTL: time.Hour, Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// hsWithKey forges an HS256 token with the provider's claims and the given
// kid, using key (public material, or our own secret) as the HMAC key.
func hsWithKey(t *testing.T, idp *e2eIdP, key []byte, kid string) string {
	t.Helper()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}) + "." +
		enc(map[string]any{"iss": idp.srv.URL, "sub": "mallory", "aud": idp.audience, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	sig, err := jwt.SigningMethodHS256.Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}
