package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// idpKeys is a signing key set of the provider, private halves included:
// the provider signs with them, the test only to forge the one token the
// provider cannot issue (an expired one).
type idpKeys struct {
	file    string
	signers map[string]crypto.Signer // by kid
}

// newIDPKeys generates an RSA 2048 and a P-256 key named rsKID and esKID,
// plus the extra keys given (already generated, to publish an old key
// again), and writes them as a private JWKS for idp.mjs.
func newIDPKeys(t *testing.T, rsKID, esKID string, keep map[string]crypto.Signer) idpKeys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := idpKeys{signers: map[string]crypto.Signer{rsKID: rk, esKID: ek}}
	for kid, s := range keep {
		k.signers[kid] = s
	}
	// New keys first: oidc-provider signs with the first key of an
	// algorithm in its set.
	kids := []string{rsKID, esKID}
	for kid := range keep {
		kids = append(kids, kid)
	}
	var set jwkset.JWKSMarshal
	for _, kid := range kids {
		s := k.signers[kid]
		jwk, err := jwkset.NewJWKFromKey(s, jwkset.JWKOptions{
			Marshal:  jwkset.JWKMarshalOptions{Private: true},
			Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	k.file = filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(k.file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// idpProc is one run of e2e/oidcjs/idp.mjs.
type idpProc struct {
	issuer string
	stop   func()
}

// startIdP runs e2e/oidcjs/idp.mjs (panva/oidc-provider issuing JWT access
// tokens) on 127.0.0.1:port with the keys, and returns once it listens.
// stop ends it (by its PID, through the command's context) and waits until
// it has exited, so the port is free for the next run; it also runs when
// the test ends.
func startIdP(t *testing.T, port int, keys idpKeys) idpProc {
	t.Helper()
	issuer, stop := runOIDCScript(t, "idp.mjs", fmt.Sprint(port), keys.file)
	return idpProc{issuer: issuer, stop: stop}
}

// token asks the provider's token endpoint for an access token for
// resource with the client credentials of client (agent-rs: RS256,
// agent-es: ES256).
func (p idpProc) token(t *testing.T, client, resource string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"feedback:create feedback:read"}}
	req, err := http.NewRequest("POST", p.issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, client+"-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &tr) != nil || strings.Count(tr.AccessToken, ".") != 2 {
		t.Fatalf("token for %s from the provider: %d %s", client, resp.StatusCode, b)
	}
	return tr.AccessToken
}

// jwksFetches is how often this provider process has served its JWKS.
func (p idpProc) jwksFetches(t *testing.T) int {
	t.Helper()
	r := do(t, http.DefaultClient, "GET", p.issuer+"/test/jwks-fetches", "")
	var n struct{ Fetches int }
	if r.Status != 200 || json.Unmarshal([]byte(r.Body), &n) != nil {
		t.Fatalf("jwks-fetches: %d %s", r.Status, r.Body)
	}
	return n.Fetches
}

// tokenHeader decodes a compact JWS's header.
func tokenHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	head, _, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	var h map[string]any
	if err != nil || json.Unmarshal(raw, &h) != nil {
		t.Fatalf("token header %q: %v", head, err)
	}
	return h
}

// withAlg is tok with its header's alg replaced and the signature kept: a
// token whose algorithm was changed after the provider signed it.
func withAlg(t *testing.T, tok, alg string) string {
	t.Helper()
	h := tokenHeader(t, tok)
	h["alg"] = alg
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(tok, ".")
	return base64.RawURLEncoding.EncodeToString(b) + "." + rest
}

// mcpToolsList opens a Streamable HTTP MCP session with plain POSTs and
// lists the tools; it returns the status of the first refused request and
// the tools/list body.
func mcpToolsList(t *testing.T, c *Caddy, tok string) (int, string) {
	t.Helper()
	post := func(body, sid string) (int, string, string) {
		req, err := http.NewRequest("POST", c.HTTP+"/mcp", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		resp, err := c.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("Mcp-Session-Id")
	}
	st, body, sid := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e-idp","version":"0"}}}`, "")
	if st/100 != 2 {
		return st, body
	}
	if st, body, _ = post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, sid); st/100 != 2 {
		return st, body
	}
	st, body, _ = post(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, sid)
	return st, body
}

// TestExternalIdPTokensFromOIDCProvider: the real Caddy binary with
// jwt_oidc_issuer pointing at a real OpenID provider (panva/oidc-provider,
// e2e/oidcjs/idp.mjs) that issues RFC 9068 JWT access tokens by client
// credentials and resource indicators. Its RS256 and ES256 tokens for
// Caddy's audience create questions over REST and list tools over MCP;
// tokens for another resource, expired, or with their alg changed are
// refused with a 401 that says why. Then the provider restarts with a new
// key set while Caddy runs: the first token of a new kid makes Caddy
// refetch the JWKS (once), after which the new keys and the key kept for
// overlap verify and the dropped key does not; no reload.
//
// The unknown-kid refetch is limited to one a minute by a token bucket
// (golang.org/x/time/rate, burst 1) that starts full, so the first refetch
// after start-up goes through at once. The sequence is built on that: no
// token before the rotation names a kid the cache lacks, and exactly one
// refetch happens after it. No test knob, no waiting out the minute.
func TestExternalIdPTokensFromOIDCProvider(t *testing.T) {
	const aud = "https://feedback.example/mcp"
	port := freePort(t)
	keys1 := newIDPKeys(t, "rs-1", "es-1", nil)
	p1 := startIdP(t, port, keys1)

	c := newCaddy(t, "IDP_ISSUER="+p1.issuer)
	c.start(jwksSites("\t\tjwt_oidc_issuer {env.IDP_ISSUER}\n\t\tjwt_audience " + aud + "\n\t\tjwt_jwks_insecure_loopback_for_tests\n"))
	if n := p1.jwksFetches(t); n != 1 {
		t.Fatalf("Caddy fetched the provider's JWKS %d times at start, want 1", n)
	}

	body := `{"message":"Deploy the release?","predefinedOptions":["yes","no"]}`
	accepted := func(what, tok string) {
		t.Helper()
		cr, _ := createSession(t, c.Client, c.HTTP, tok, body)
		if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+tok); r.Status != 200 {
			t.Fatalf("%s: status of its own question: %d %s", what, r.Status, r.Body)
		}
		st, list := mcpToolsList(t, c, tok)
		if st != 200 || !strings.Contains(list, `"interactive_feedback"`) {
			t.Fatalf("%s: MCP tools/list: %d %s", what, st, list)
		}
	}
	refused := func(what, tok, why string) {
		t.Helper()
		r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", body, "Authorization", "Bearer "+tok)
		h := r.Header.Get("WWW-Authenticate")
		if r.Status != 401 || !strings.Contains(h, `error="invalid_token"`) || !strings.Contains(h, why) {
			t.Fatalf("%s: %d %s, WWW-Authenticate %q; want 401 invalid_token saying %q", what, r.Status, r.Body, h, why)
		}
		if st, b := mcpToolsList(t, c, tok); st != 401 {
			t.Fatalf("%s over MCP: %d %s, want 401", what, st, b)
		}
	}

	rs1, es1 := p1.token(t, "agent-rs", aud), p1.token(t, "agent-es", aud)
	for tok, want := range map[string]string{rs1: "RS256 rs-1", es1: "ES256 es-1"} {
		h := tokenHeader(t, tok)
		if got := fmt.Sprint(h["alg"], " ", h["kid"]); got != want || h["typ"] != "at+jwt" {
			t.Fatalf("the provider's token header is %v, want alg and kid %q, typ at+jwt", h, want)
		}
	}
	accepted("RS256 token from the provider", rs1)
	accepted("ES256 token from the provider", es1)

	// oidc-provider issues no token that is already expired (its TTLs
	// must be positive): this one is signed here with the provider's own
	// key rs-1, its claims as the provider's, exp in the past.
	expired := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": p1.issuer, "sub": "agent-rs", "aud": aud,
		"client_id": "agent-rs", "scope": "feedback:create feedback:read",
		"iat": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-50 * time.Minute).Unix()})
	expired.Header["kid"], expired.Header["typ"] = "rs-1", "at+jwt"
	expiredTok, err := expired.SignedString(keys1.signers["rs-1"])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ what, tok, why string }{
		{"token for another resource", p1.token(t, "agent-rs", "https://other.example/api"), "audience (aud) is not this server"},
		{"expired token", expiredTok, "has expired"},
		{"RS256 token relabelled PS256", withAlg(t, rs1, "PS256"), "alg is not the algorithm of the key"},
		{"RS256 token relabelled ES256", withAlg(t, rs1, "ES256"), "alg is not the algorithm of the key"},
		{"ES256 token relabelled ES384", withAlg(t, es1, "ES384"), "alg is not the algorithm of the key"},
		{"ES256 token relabelled HS256", withAlg(t, es1, "HS256"), "accepts tokens signed with"},
		{"RS256 token relabelled none", withAlg(t, rs1, "none"), "accepts tokens signed with"},
	} {
		refused(tc.what, tc.tok, tc.why)
	}
	if n := p1.jwksFetches(t); n != 1 {
		t.Fatalf("the refused tokens made Caddy fetch the JWKS again (%d fetches), want none: none of them names an unknown kid", n)
	}

	// Rotation. The provider goes down: the cached keys still verify.
	p1.stop()
	accepted("RS256 token while the provider is down", rs1)
	// It comes back on the same issuer with new keys rs-2 and es-2, rs-1
	// kept for overlap and es-1 dropped.
	keys2 := newIDPKeys(t, "rs-2", "es-2", map[string]crypto.Signer{"rs-1": keys1.signers["rs-1"]})
	p2 := startIdP(t, port, keys2)
	if p2.issuer != p1.issuer {
		t.Fatalf("the restarted provider's issuer is %s, want %s", p2.issuer, p1.issuer)
	}
	rs2, es2 := p2.token(t, "agent-rs", aud), p2.token(t, "agent-es", aud)
	for tok, want := range map[string]string{rs2: "rs-2", es2: "es-2"} {
		if kid := tokenHeader(t, tok)["kid"]; kid != want {
			t.Fatalf("the rotated provider signs with %v, want the new key %s", kid, want)
		}
	}
	accepted("ES256 token of the new key es-2", es2)
	if n := p2.jwksFetches(t); n != 1 {
		t.Fatalf("after the first token of a new kid the provider served its JWKS %d times, want 1 (the unknown-kid refetch)", n)
	}
	accepted("RS256 token of the rotated provider", rs2)
	accepted("token of the kept key rs-1", rs1)
	refused("token of the dropped key es-1", es1, "names no key this server knows")
	refused("token of the dropped key es-1, fresh from its signer", func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": p1.issuer, "sub": "agent-es", "aud": aud,
			"iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()})
		tok.Header["kid"], tok.Header["typ"] = "es-1", "at+jwt"
		s, err := tok.SignedString(keys1.signers["es-1"])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}(), "names no key this server knows")
	// Made-up kids within the minute cost the provider nothing.
	refused("a made-up kid", func() string {
		h := tokenHeader(t, es2)
		h["kid"] = "made-up"
		b, _ := json.Marshal(h)
		_, rest, _ := strings.Cut(es2, ".")
		return base64.RawURLEncoding.EncodeToString(b) + "." + rest
	}(), "names no key this server knows")
	if n := p2.jwksFetches(t); n != 1 {
		t.Fatalf("the rotated provider served its JWKS %d times, want 1: the unknown-kid refetch is limited to one a minute", n)
	}
	if !strings.Contains(c.logs.String(), "jwt_jwks_insecure_loopback_for_tests is on") {
		t.Fatal("no warning about the loopback test switch in Caddy's log")
	}
}
