package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

func token(t testing.TB, sub string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(secret), auth.TokenOptions{Subject: sub, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

const memorySites = `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
	respond "next handler" 200
}
https://localhost:{HTTPS} {
	tls internal
	encode gzip
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
	respond "next handler" 200
}
`

// redisSites serves the module on the Redis at url; extra are more
// mcp_feedback options, one per line.
func redisSites(url string, extra ...string) string {
	opts := ""
	for _, e := range extra {
		opts += "\t\t" + e + "\n"
	}
	return `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		store redis ` + url + ` {
			key_prefix e2e:
		}
` + opts + `	}
	respond "next handler" 200
}
`
}

type created struct {
	SessionID   string `json:"sessionId"`
	FeedbackURL string `json:"feedbackUrl"`
	Status      string `json:"status"`
	Timeout     int    `json:"timeout"`
}

func createSession(t testing.TB, c *http.Client, base, tok, body string) (created, string) {
	t.Helper()
	r := do(t, c, "POST", base+"/api/feedback/create", body, "Authorization", "Bearer "+tok)
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var cr created
	if err := json.Unmarshal([]byte(r.Body), &cr); err != nil {
		t.Fatal(err)
	}
	_, capTok, ok := strings.Cut(cr.FeedbackURL, "#t=")
	if !ok || capTok == "" {
		t.Fatalf("feedbackUrl %q has no capability token", cr.FeedbackURL)
	}
	return cr, capTok
}

// flow is one question's life through the REST API, as a client sees it.
func flow(t *testing.T, c *http.Client, base string) {
	alice, bob := token(t, "alice"), token(t, "bob")
	r := do(t, c, "GET", base+"/health", "")
	if r.Status != 200 || !strings.Contains(r.Body, `"status":"ok"`) {
		t.Fatalf("health: %d %s", r.Status, r.Body)
	}
	cr, capTok := createSession(t, c, base, alice, `{"message":"Deploy **now**?","predefinedOptions":["yes","no"],"timeout":300}`)
	if !strings.HasPrefix(cr.FeedbackURL, base+"/feedback/"+cr.SessionID+"#t=") || cr.Status != "pending" || cr.Timeout != 300 {
		t.Fatalf("create response %+v", cr)
	}
	api := base + "/api/feedback/" + cr.SessionID
	if r = do(t, c, "GET", api+"/status", "", "Authorization", "Bearer "+alice); r.Status != 200 || !strings.Contains(r.Body, `"pending"`) {
		t.Fatalf("status: %d %s", r.Status, r.Body)
	}
	if r = do(t, c, "GET", api+"/status", "", "Authorization", "Bearer "+bob); r.Status != 404 {
		t.Fatalf("status as another user: %d %s", r.Status, r.Body)
	}
	if r = do(t, c, "POST", api+"/submit", `{"selectedOptions":["yes"]}`); r.Status != 404 {
		t.Fatalf("submit with the id alone: %d %s, want 404", r.Status, r.Body)
	}
	r = do(t, c, "POST", api+"/submit", `{"selectedOptions":["yes"],"nonce":"click-1"}`, "X-Feedback-Token", capTok)
	if r.Status != 200 || !strings.Contains(r.Body, `"status":"submitted"`) {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	if r2 := do(t, c, "POST", api+"/submit", `{"selectedOptions":["yes"],"nonce":"click-1"}`, "X-Feedback-Token", capTok); r2.Status != 200 || r2.Body != r.Body {
		t.Fatalf("same-nonce retry: %d %s, want the same 200", r2.Status, r2.Body)
	}
	if r = do(t, c, "POST", api+"/submit", `{"selectedOptions":["no"]}`, "X-Feedback-Token", capTok); r.Status != 409 {
		t.Fatalf("second submit: %d %s, want 409", r.Status, r.Body)
	}
	r = do(t, c, "GET", api+"/result", "", "Authorization", "Bearer "+alice)
	var res struct {
		Status string `json:"status"`
		Result struct {
			SelectedOptions []string `json:"selectedOptions"`
			SubmittedAt     string   `json:"submittedAt"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.Body), &res); err != nil || res.Status != "submitted" || len(res.Result.SelectedOptions) != 1 || res.Result.SelectedOptions[0] != "yes" || res.Result.SubmittedAt == "" {
		t.Fatalf("result: %d %s", r.Status, r.Body)
	}

	// The module passes what is not its own to the next handler, and owns
	// its paths for every method.
	if r = do(t, c, "GET", base+"/elsewhere", ""); r.Status != 200 || r.Body != "next handler" {
		t.Fatalf("other path: %d %q", r.Status, r.Body)
	}
	if r = do(t, c, "GET", base+"/api/feedback/create", ""); r.Status != 405 || r.Header.Get("Allow") != "POST" {
		t.Fatalf("GET create: %d %s", r.Status, r.Body)
	}
	if r = do(t, c, "POST", base+"/api/feedback/create", `{"message":"x"}`); r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Fatalf("create without token: %d %v", r.Status, r.Header)
	}
	for _, p := range []string{"..%2F..%2Fetc%2Fpasswd", "%00", "%2e%2e%2f", "*", "%7Bx%7D", strings.Repeat("a", 10<<10), strings.ToUpper(cr.SessionID)} {
		if r = do(t, c, "GET", base+"/api/feedback/"+p+"/status", "", "Authorization", "Bearer "+alice); r.Status != 404 || !strings.Contains(r.Body, `"not_found"`) {
			t.Errorf("status of %.40q: %d %s, want 404", p, r.Status, r.Body)
		}
	}
	if r = do(t, c, "GET", base+"/.well-known/oauth-protected-resource", ""); r.Status != 200 || !strings.Contains(r.Body, `"resource":"`+base+`"`) {
		t.Fatalf("resource metadata: %d %s", r.Status, r.Body)
	}
}

func TestMemoryStoreHTTPAndHTTPS(t *testing.T) {
	c := startCaddy(t, memorySites)
	t.Run("http", func(t *testing.T) { flow(t, c.Client, c.HTTP) })
	t.Run("https", func(t *testing.T) {
		flow(t, c.Client, c.HTTPS)
		resp, err := c.Client.Get(c.HTTPS + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
			t.Fatal("no TLS on the https site")
		}
	})
}

func TestRedisStore(t *testing.T) {
	// fsync on every write: the test kills Redis with -9 right after a
	// create, and everysec may lose the last second (as documented).
	rs := redistest.Start(t, "--appendfsync", "always")
	c := startCaddy(t, redisSites(rs.URL()))
	flow(t, c.Client, c.HTTP)

	// A session made before Redis goes away is still there after it returns
	// (AOF on); while it is away the API says 503 with Retry-After, and
	// health says degraded.
	alice := token(t, "alice")
	cr, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"survive?"}`)
	rs.Kill()
	r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+alice)
	if r.Status != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.Body, "store_unavailable") {
		t.Fatalf("status with Redis down: %d %s", r.Status, r.Body)
	}
	if r = do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"x"}`, "Authorization", "Bearer "+alice); r.Status != 503 {
		t.Fatalf("create with Redis down: %d %s", r.Status, r.Body)
	}
	if r = do(t, c.Client, "GET", c.HTTP+"/health", ""); r.Status != 503 || !strings.Contains(r.Body, `"degraded"`) {
		t.Fatalf("health with Redis down: %d %s", r.Status, r.Body)
	}
	rs.Restart(t)
	eventually(10*time.Second, func() bool {
		r = do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+alice)
		return r.Status == 200
	})
	if r.Status != 200 || !strings.Contains(r.Body, `"pending"`) {
		t.Fatalf("status after Redis restart: %d %s", r.Status, r.Body)
	}
}

// TestReloadKeepsSessions: a config reload builds a new handler; sessions
// live in the pooled store, so nothing is lost.
func TestReloadKeepsSessions(t *testing.T) {
	c := startCaddy(t, memorySites)
	alice := token(t, "alice")
	cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"still here after reload?"}`)
	c.reload(strings.Replace(memorySites, "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmax_options 5", 1))
	// The new config is in force…
	r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"x","predefinedOptions":["1","2","3","4","5","6"]}`, "Authorization", "Bearer "+alice)
	if r.Status != 400 {
		t.Fatalf("after reload max_options 5: %d %s", r.Status, r.Body)
	}
	// …and the old session survived it.
	r = do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"yes"}`, "X-Feedback-Token", capTok)
	if r.Status != 200 {
		t.Fatalf("submit after reload: %d %s", r.Status, r.Body)
	}
}

// TestHandlePathPrefix: mounted under a stripped prefix, links keep it.
func TestHandlePathPrefix(t *testing.T) {
	c := startCaddy(t, `
http://127.0.0.1:{HTTP} {
	handle /health {
		respond "outer health" 200
	}
	handle_path /fb/* {
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
		}
	}
}
`)
	cr, capTok := createSession(t, c.Client, c.HTTP+"/fb", token(t, "alice"), `{"message":"prefixed"}`)
	if !strings.HasPrefix(cr.FeedbackURL, c.HTTP+"/fb/feedback/") {
		t.Fatalf("feedbackUrl %q lacks the /fb prefix", cr.FeedbackURL)
	}
	if r := do(t, c.Client, "POST", c.HTTP+"/fb/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"ok"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit under prefix: %d %s", r.Status, r.Body)
	}
}

func TestPublicURL(t *testing.T) {
	c := startCaddy(t, `
http://:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		public_url https://feedback.example.com/
	}
}
`)
	cr, _ := createSession(t, c.Client, c.HTTP, token(t, "alice"), `{"message":"where?"}`)
	if !strings.HasPrefix(cr.FeedbackURL, "https://feedback.example.com/feedback/"+cr.SessionID+"#t=") {
		t.Fatalf("feedbackUrl %q ignores public_url", cr.FeedbackURL)
	}
	// A 401 challenge points at metadata under the configured URL, never
	// at whatever Host the request claimed.
	req, _ := http.NewRequest("POST", c.HTTP+"/api/feedback/create", strings.NewReader(`{}`))
	req.Host = "evil.example"
	resp, err := c.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `"https://feedback.example.com/.well-known/oauth-protected-resource"`) {
		t.Fatalf("challenge %q", ch)
	}
}

// TestSecretHandling: the module refuses to start without a strong secret,
// and a secret given as {env.X} never reaches the adapted JSON.
func TestSecretHandling(t *testing.T) {
	c := newCaddy(t)
	path := c.writeConfig(`
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
}
`)
	out, err := caddyCmd(t, c.env, "adapt", "--config", path, "--adapter", "caddyfile")
	if err != nil || strings.Contains(out, secret) || !strings.Contains(out, `"jwt_secret":"{env.JWT_SECRET}"`) {
		t.Fatalf("adapt (err %v) leaked or lost the placeholder:\n%s", err, out)
	}
	for name, env := range map[string][]string{
		"short secret":   {"JWT_SECRET=too-short"},
		"missing secret": {"JWT_SECRET="},
	} {
		out, err := caddyCmd(t, append(append([]string{}, c.env...), env...), "validate", "--config", path, "--adapter", "caddyfile")
		if err == nil || !strings.Contains(out, "jwt_secret") {
			t.Errorf("%s: validate succeeded or said nothing about jwt_secret (err %v):\n%s", name, err, tail(out, 800))
		}
	}
	bad := c.writeConfig(`
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		jwt_secert typo
	}
}
`)
	if out, err := caddyCmd(t, c.env, "adapt", "--config", bad, "--adapter", "caddyfile"); err == nil || !strings.Contains(out, `unknown mcp_feedback option`) || !strings.Contains(out, "jwt_secert") {
		t.Fatalf("typo accepted (err %v):\n%s", err, tail(out, 800))
	}
}

// TestTokenCommand: `caddy mcp-feedback token` mints a token the server accepts.
func TestTokenCommand(t *testing.T) {
	c := startCaddy(t, memorySites)
	out, err := caddyCmd(t, c.env, "mcp-feedback", "token", "--sub", "carol", "--ttl", "10m", "--scope", "feedback:create")
	if err != nil {
		t.Fatalf("token command: %v\n%s", err, out)
	}
	tok := strings.TrimSpace(out)
	if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"hi"}`, "Authorization", "Bearer "+tok); r.Status != 201 {
		t.Fatalf("create with minted token: %d %s", r.Status, r.Body)
	}
	cr, _ := createSession(t, c.Client, c.HTTP, tok, `{"message":"scoped"}`)
	if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+tok); r.Status != 403 {
		t.Fatalf("read with a create-only token: %d %s, want 403", r.Status, r.Body)
	}
	if out, err := caddyCmd(t, append(os.Environ(), "JWT_SECRET="), "mcp-feedback", "token", "--sub", "x"); err == nil || !strings.Contains(out, "JWT_SECRET") {
		t.Fatalf("token without JWT_SECRET: %v %s", err, out)
	}
}

// TestExampleCaddyfileLoads: the quick-start config the README points at
// adapts and provisions (caddy validate runs Provision).
func TestExampleCaddyfileLoads(t *testing.T) {
	c := newCaddy(t)
	out, err := caddyCmd(t, c.env, "validate", "--config", "../Caddyfile.example", "--adapter", "caddyfile")
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("validate Caddyfile.example: %v\n%s", err, tail(out, 1500))
	}
}
