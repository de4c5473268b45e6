package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// oauthByHTTP runs the authorization-code flow the way a browser and an
// app would, over plain HTTP (the browser step is TestOAuthMCPClient's):
// register, authorize as alice (basic_auth), approve, redeem. It returns
// the token response.
func oauthByHTTP(t *testing.T, base, scope string) (clientID string, tok map[string]any) {
	t.Helper()
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	const cb = "http://127.0.0.1:9/cb"
	r := do(t, noRedirect, "POST", base+"/oauth/register", `{"client_name":"HTTP client","redirect_uris":["`+cb+`"]}`)
	var reg map[string]any
	if json.Unmarshal([]byte(r.Body), &reg) != nil || r.Status != 201 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	clientID = reg["client_id"].(string)
	verifier := rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {cb}, "scope": {scope},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}, "resource": {base + "/mcp"}}
	alice := "Basic " + b64("alice:alice-password")
	r = do(t, noRedirect, "GET", base+"/oauth/authorize?"+q.Encode(), "", "Authorization", alice)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(r.Body)
	if r.Status != 200 || m == nil {
		t.Fatalf("consent page: %d %s", r.Status, tail(r.Body, 500))
	}
	req, _ := http.NewRequest("POST", base+"/oauth/authorize", strings.NewReader(url.Values{"csrf": {m[1]}, "decision": {"approve"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", alice)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 303 || loc.Query().Get("code") == "" {
		t.Fatalf("approve: %d %s", resp.StatusCode, loc)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {loc.Query().Get("code")}, "redirect_uri": {cb}, "code_verifier": {verifier}}
	tr, err := noRedirect.PostForm(base+"/oauth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Body.Close()
	if err := json.NewDecoder(tr.Body).Decode(&tok); err != nil || tr.StatusCode != 200 {
		t.Fatalf("token: %d %v", tr.StatusCode, tok)
	}
	return clientID, tok
}

func hs256(t *testing.T, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOAuthHostileTokens: on a site with `login` only (no jwt_secret), the
// agents' endpoints take this site's OAuth access tokens and nothing
// else: no JWT however it is signed, no token of another site, no token
// after revocation; a 401 names the scopes to ask for and a missing scope
// is a 403 that asks for step-up.
func TestOAuthHostileTokens(t *testing.T) {
	sites := oauthSites(t, "http", "") + strings.Replace(oauthSites(t, "http", ""), "127.0.0.1", "localhost", -1)
	c := startCaddy(t, sites)
	base := c.HTTP
	other := strings.Replace(base, "127.0.0.1", "localhost", 1)

	md := do(t, c.Client, "GET", base+"/.well-known/oauth-authorization-server", "")
	for _, want := range []string{`"issuer":"` + base + `"`, `"code_challenge_methods_supported":["S256"]`, `"client_id_metadata_document_supported":true`,
		`"authorization_response_iss_parameter_supported":true`, `"response_types_supported":["code"]`} {
		if !strings.Contains(md.Body, want) {
			t.Errorf("AS metadata lacks %s: %s", want, md.Body)
		}
	}
	if prm := do(t, c.Client, "GET", base+"/.well-known/oauth-protected-resource/mcp", ""); !strings.Contains(prm.Body, `"authorization_servers":["`+base+`"]`) {
		t.Errorf("resource metadata does not list the authorization server: %s", prm.Body)
	}

	fullClient, full := oauthByHTTP(t, base, "feedback:create feedback:read")
	_, readOnly := oauthByHTTP(t, base, "feedback:read")
	_, foreign := oauthByHTTP(t, other, "feedback:create feedback:read")
	access := full["access_token"].(string)
	now := time.Now()
	claims := jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "feedback:create feedback:read"}
	random := make([]byte, 32)
	_, _ = rand.Read(random)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)

	create := `{"message":"hostile?"}`
	cases := []struct {
		name, token string
		status      int
		says        string
	}{
		{"no token", "", 401, `scope="feedback:create feedback:read"`},
		{"made-up opaque token", "fbo_AAAAAAAAAAAAAAAAAAAAAAAAAA", 401, `error="invalid_token"`},
		{"HS256 JWT, site has no secret", hs256(t, random, claims), 401, `error="invalid_token"`},
		{"HS256 JWT keyed with the access token (alg confusion)", hs256(t, []byte(access), claims), 401, `error="invalid_token"`},
		{"alg none", none, 401, `error="invalid_token"`},
		{"opaque prefix on a JWT", "fbo_" + hs256(t, random, claims), 401, `error="invalid_token"`},
		{"refresh token as access token", full["refresh_token"].(string), 401, `error="invalid_token"`},
		{"token of another site (audience)", foreign["access_token"].(string), 401, `error="invalid_token"`},
		{"read-only token creating (step-up)", readOnly["access_token"].(string), 403, `scope="feedback:read feedback:create"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.token != "" {
				hdr = []string{"Authorization", "Bearer " + tc.token}
			}
			r := do(t, c.Client, "POST", base+"/api/feedback/create", create, hdr...)
			ch := r.Header.Get("WWW-Authenticate")
			if r.Status != tc.status || !strings.Contains(ch, tc.says) || !strings.Contains(ch, "resource_metadata=") {
				t.Fatalf("%d %s, WWW-Authenticate %q; want %d with %s", r.Status, r.Body, ch, tc.status, tc.says)
			}
			// MCP answers the same way.
			if tc.status == 401 {
				if m := do(t, c.Client, "POST", base+"/mcp", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, hdr...); m.Status != 401 {
					t.Fatalf("/mcp: %d", m.Status)
				}
			}
		})
	}
	ok := do(t, c.Client, "POST", base+"/api/feedback/create", create, "Authorization", "Bearer "+access)
	if ok.Status != 201 {
		t.Fatalf("create with the access token: %d %s", ok.Status, ok.Body)
	}
	var cr struct{ SessionID string }
	_ = json.Unmarshal([]byte(ok.Body), &cr)
	// The question is alice's: her read-only token sees it.
	if st := do(t, c.Client, "GET", base+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+readOnly["access_token"].(string)); st.Status != 200 {
		t.Fatalf("status with alice's other token: %d %s", st.Status, st.Body)
	}
	// The owner's WebSocket takes the access token on the handshake.
	ws := wsBase(base) + "/ws/" + cr.SessionID + "?clientType=app"
	if conn, resp, err := wsDial(t, c, ws, http.Header{"Authorization": {"Bearer " + access}}); err != nil || resp.StatusCode != 101 {
		t.Fatalf("WebSocket with the access token: %v %v", err, resp)
	} else {
		conn.CloseNow()
	}
	if _, resp, err := wsDial(t, c, ws, http.Header{"Authorization": {"Bearer " + foreign["access_token"].(string)}}); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("WebSocket with another site's token: %v %v", err, resp)
	}
	// Revoked (RFC 7009) by its client: the next call is a 401.
	rv, err := c.Client.PostForm(base+"/oauth/revoke", url.Values{"token": {access}, "client_id": {fullClient}})
	if err != nil {
		t.Fatal(err)
	}
	rv.Body.Close()
	if r := do(t, c.Client, "POST", base+"/api/feedback/create", create, "Authorization", "Bearer "+access); rv.StatusCode != 200 || r.Status != 401 {
		t.Fatalf("revoke: %d, then create: %d %s", rv.StatusCode, r.Status, r.Body)
	}
}
