package mcpfeedback

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		jwt_issuer https://issuer.example
		jwt_audience feedback
		public_url https://fb.example/base
		store redis redis://127.0.0.1:6379/2 {
			key_prefix test:
		}
		default_timeout 10m
		min_timeout 1m
		max_timeout 2h
		max_message_length 2000
		max_options 5
		max_option_length 50
		max_questions 4
		max_images off
		timeout_out_of_range reject
		retention 24h
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.JWTSecret != "{env.JWT_SECRET}" || h.JWTIssuer != "https://issuer.example" || h.JWTAudience != "feedback" ||
		h.PublicURL != "https://fb.example/base" || time.Duration(h.DefaultTimeout) != 10*time.Minute ||
		time.Duration(h.MinTimeout) != time.Minute || time.Duration(h.MaxTimeout) != 2*time.Hour ||
		h.MaxMessageLength != 2000 || h.MaxOptions != 5 || h.MaxOptionLength != 50 || time.Duration(h.Retention) != 24*time.Hour ||
		h.MaxQuestions != 4 || h.TimeoutOutOfRange != "reject" || h.MaxImages != -1 {
		t.Fatalf("parsed %+v", h)
	}
	var st map[string]string
	if err := json.Unmarshal(h.StoreRaw, &st); err != nil {
		t.Fatal(err)
	}
	if st["backend"] != "redis" || st["url"] != "redis://127.0.0.1:6379/2" || st["key_prefix"] != "test:" {
		t.Fatalf("store JSON %s", h.StoreRaw)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for name, c := range map[string]struct{ in, want string }{
		"unknown option":      {"mcp_feedback {\n jwt_secert x\n}", `unknown mcp_feedback option "jwt_secert"`},
		"argument on line":    {`mcp_feedback foo`, "takes no arguments"},
		"twice":               {"mcp_feedback {\n max_options 3\n max_options 4\n}", "set twice"},
		"missing value":       {"mcp_feedback {\n jwt_secret\n}", "needs a value"},
		"two values":          {"mcp_feedback {\n jwt_issuer a b\n}", "takes one value"},
		"bad duration":        {"mcp_feedback {\n default_timeout soon\n}", "not a positive whole number of seconds"},
		"fractional duration": {"mcp_feedback {\n default_timeout 1.5s\n}", "not a positive whole number of seconds"},
		"negative int":        {"mcp_feedback {\n max_options -1\n}", "not a positive whole number"},
		"unknown store":       {"mcp_feedback {\n store etcd\n}", "etcd"},
		"store without name":  {"mcp_feedback {\n store\n}", "needs a backend"},
		"redis without url":   {"mcp_feedback {\n store redis\n}", "needs a URL"},
		"redis unknown opt":   {"mcp_feedback {\n store redis redis://x {\n db 3\n }\n}", `unknown store redis option "db"`},
		"memory with args":    {"mcp_feedback {\n store memory extra\n}", "wrong argument count"},
		"out of range word":   {"mcp_feedback {\n timeout_out_of_range ignore\n}", "timeout_out_of_range must be clamp or reject"},
	} {
		t.Run(name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestProvisionFailsClosed(t *testing.T) {
	for name, c := range map[string]struct {
		h    Handler
		want string
	}{
		"no secret":               {Handler{}, "jwt_secret is required"},
		"unset env":               {Handler{JWTSecret: "{env.MCPFB_TEST_UNSET_SECRET}"}, "jwt_secret is required"},
		"short secret":            {Handler{JWTSecret: "short"}, "at least 32 bytes"},
		"bad limits":              {Handler{JWTSecret: strings.Repeat("s", 32), MinTimeout: caddy.Duration(time.Hour), MaxTimeout: caddy.Duration(time.Minute)}, "min_timeout"},
		"bad public_url":          {Handler{JWTSecret: strings.Repeat("s", 32), PublicURL: "ftp://x"}, "public_url"},
		"public_url+query":        {Handler{JWTSecret: strings.Repeat("s", 32), PublicURL: "https://x/?a=b"}, "public_url"},
		"short previous secret":   {Handler{JWTSecret: strings.Repeat("s", 32), JWTPreviousSecrets: []string{"short"}}, "jwt_previous_secrets: secret 1"},
		"unset previous secret":   {Handler{JWTSecret: strings.Repeat("s", 32), JWTPreviousSecrets: []string{"{env.MCPFB_TEST_UNSET_SECRET}"}}, "jwt_previous_secrets"},
		"previous without secret": {Handler{JWTPreviousSecrets: []string{strings.Repeat("p", 32)}, JWTOIDCIssuer: "https://idp.example", JWTAudience: "a"}, "needs jwt_secret"},
		"jwks without audience":   {Handler{JWTOIDCIssuer: "https://idp.example"}, "jwt_audience is required"},
		"jwks url without issuer": {Handler{JWTJWKS: "https://idp.example/jwks", JWTAudience: "a"}, "jwt_issuer is required"},
		"jwks and oidc issuer":    {Handler{JWTJWKS: "https://idp.example/jwks", JWTOIDCIssuer: "https://idp.example", JWTAudience: "a"}, "not both"},
		"http jwks":               {Handler{JWTJWKS: "http://127.0.0.1:1/jwks", JWTIssuer: "i", JWTAudience: "a"}, "must be https"},
		"http jwks, not loopback": {Handler{JWTJWKS: "http://idp.example/jwks", JWTIssuer: "i", JWTAudience: "a", JWTJWKSInsecureLoopbackForTests: true}, "loopback"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
			defer cancel()
			h := c.h
			err := h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Provision error %v, want %q", err, c.want)
			}
			if err := h.Cleanup(); err != nil {
				t.Fatalf("Cleanup after a failed Provision: %v", err)
			}
		})
	}
}

// TestPoolSharesStore: two handlers with the same store config share one
// store (what a reload relies on); it closes when the last lets go.
func TestPoolSharesStore(t *testing.T) {
	var b MemoryStore
	a1, err := acquireShared(b, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	a2, err := acquireShared(b, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if a1.hub != a2.hub {
		t.Fatal("two memory-store handlers got different stores")
	}
	if err := releaseShared(b.PoolKey()); err != nil {
		t.Fatal(err)
	}
	ping := func() error { return feedback.NewService(a1.hub, feedback.Config{}).Ping(t.Context()) }
	if err := ping(); err != nil {
		t.Fatalf("store closed while still in use: %v", err)
	}
	if err := releaseShared(b.PoolKey()); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err == nil {
		t.Fatal("store still open after the last handler let go")
	}
}

// FuzzCaddyfile: no directive body panics the parser.
func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"mcp_feedback {\n jwt_secret {env.JWT_SECRET}\n store redis redis://x {\n key_prefix p\n }\n}",
		"mcp_feedback {\n store memory\n max_options 3\n}", "mcp_feedback {\n default_timeout 1.5s\n}", "mcp_feedback x y {",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
	})
}

// TestUnmarshalCaddyfileHumanSide: the answer page and WebSocket options.
func TestUnmarshalCaddyfileHumanSide(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`mcp_feedback {
		allowed_origins https://app.example.com http://localhost:8080
		ws_max_per_session 3
		ws_max_per_subject 7
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(h.AllowedOrigins, " ") != "https://app.example.com http://localhost:8080" || h.WSMaxPerSession != 3 || h.WSMaxPerSubject != 7 {
		t.Fatalf("parsed %+v", h)
	}
	for name, c := range map[string]struct{ in, want string }{
		"no origin":         {"mcp_feedback {\n allowed_origins\n}", "needs at least one value"},
		"origin with path":  {"mcp_feedback {\n allowed_origins https://a.example/x\n}", "must be an origin"},
		"wildcard origin":   {"mcp_feedback {\n allowed_origins https://*.example.com\n}", "no wildcards"},
		"scheme-less":       {"mcp_feedback {\n allowed_origins app.example.com\n}", "must be an origin"},
		"origins twice":     {"mcp_feedback {\n allowed_origins https://a.example\n allowed_origins https://b.example\n}", "set twice"},
		"zero session cap":  {"mcp_feedback {\n ws_max_per_session 0\n}", "not a positive whole number"},
		"text subject cap":  {"mcp_feedback {\n ws_max_per_subject many\n}", "not a positive whole number"},
		"unknown ws option": {"mcp_feedback {\n ws_max 3\n}", "ws_max_per_session"},
	} {
		t.Run(name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	// JSON configs skip the Caddyfile parser; Provision checks them too.
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	bad := Handler{JWTSecret: strings.Repeat("s", 32), AllowedOrigins: []string{"https://*.example.com"}}
	if err := bad.Provision(ctx); err == nil || !strings.Contains(err.Error(), "allowed_origins") {
		t.Fatalf("Provision with a wildcard origin: %v", err)
	}
	if err := bad.Cleanup(); err != nil {
		t.Fatalf("Cleanup after a failed Provision: %v", err)
	}
}

// TestUnmarshalCaddyfileElicitation: the MCP elicitation option.
func TestUnmarshalCaddyfileElicitation(t *testing.T) {
	for _, mode := range []string{"off", "url", "form"} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n elicitation " + mode + "\n}")); err != nil || h.Elicitation != mode {
			t.Fatalf("elicitation %s: %v, parsed %q", mode, err, h.Elicitation)
		}
	}
	for name, c := range map[string]struct{ in, want string }{
		"unknown mode": {"mcp_feedback {\n elicitation always\n}", `elicitation must be off, url or form, not "always"`},
		"no mode":      {"mcp_feedback {\n elicitation\n}", "needs a value"},
		"two modes":    {"mcp_feedback {\n elicitation url form\n}", "takes one value"},
		"twice":        {"mcp_feedback {\n elicitation url\n elicitation off\n}", "set twice"},
		"typo listed":  {"mcp_feedback {\n elicitaton url\n}", "elicitation, "},
	} {
		t.Run(name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestResolveRefuses: settings that would weaken the trust model fail to
// load with a message that says why.
func TestResolveRefuses(t *testing.T) {
	for in, want := range map[string]string{
		"mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n notify webhook https://hooks.example/x\n}": "public_url is required",
		"mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n link_to_agent off\n elicitation url\n}":    "elicitation",
		"mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n max_images 5\n}":                           "max_images is at most 4",
		"mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n max_timeout 169h\n}":                       "longer than the longest allowed, 168h0m0s (7 days)",
		"mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n allow_addressing\n}":                       "allow_addressing needs inbox",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if _, err := h.resolve(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %q", in, err, want)
		}
	}
	// link_to_agent off turns elicitation off by default; notify with public_url loads.
	var h Handler
	in := "mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n public_url https://fb.example\n link_to_agent off\n notify webhook https://hooks.example/x\n}"
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	cfg, err := h.resolve()
	if err != nil || cfg.linkToAgent || cfg.elicitation != "off" {
		t.Fatalf("%+v %v", cfg, err)
	}
	// allow_addressing reaches the limits create is checked with; it takes no value.
	h = Handler{}
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n inbox\n allow_addressing\n}")); err != nil {
		t.Fatal(err)
	}
	if cfg, err := h.resolve(); err != nil || !cfg.limits.AllowAddressing {
		t.Fatalf("allow_addressing: %+v %v", cfg, err)
	}
	if err := (&Handler{}).UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n allow_addressing yes\n}")); err == nil || !strings.Contains(err.Error(), "takes no value") {
		t.Fatalf("allow_addressing yes: %v", err)
	}
	// A week is the longest max_timeout; clamp is the default.
	h = Handler{}
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n max_timeout 168h\n}")); err != nil {
		t.Fatal(err)
	}
	if cfg, err := h.resolve(); err != nil || cfg.limits.MaxTimeout != 168*time.Hour || cfg.limits.TimeoutOutOfRange != "clamp" || cfg.limits.MaxQuestions != 10 {
		t.Fatalf("%+v %v", cfg, err)
	}
	if _, err := (&Handler{}).resolve(); err == nil {
		t.Fatal("no jwt_secret accepted")
	}
}

// TestSecurityOptions: the token and store options of the security review
// parse into the fields Provision uses, and bad values are refused.
func TestSecurityOptions(t *testing.T) {
	in := "mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n public_url https://fb.example\n jwt_max_ttl 48h\n jwt_denied_jtis a1 b2\n" +
		" store memory {\n  max_sessions 5\n }\n notify webhook https://hooks.example/x {\n  events answered\n  include_answer\n }\n}"
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	cfg, err := h.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.maxTTL != 48*time.Hour || strings.Join(h.JWTDeniedJTIs, ",") != "a1,b2" || !h.Notify[0].IncludeAnswer || h.Notify[0].Events[0] != "answered" {
		t.Fatalf("parsed %+v / %+v", cfg, h)
	}
	hooks, err := h.webhooks()
	if err != nil || !hooks[0].IncludeAnswer || hooks[0].Events[0] != "session.answered" {
		t.Fatalf("webhooks %+v %v", hooks, err)
	}
	if !strings.Contains(string(h.StoreRaw), `"max_sessions":5`) {
		t.Fatalf("store %s", h.StoreRaw)
	}
	for _, bad := range []string{
		"mcp_feedback {\n jwt_max_ttl forever\n}",
		"mcp_feedback {\n jwt_denied_jtis\n}",
		"mcp_feedback {\n store memory {\n  max_sessions lots\n }\n}",
		"mcp_feedback {\n store memory {\n  size 3\n }\n}",
		"mcp_feedback {\n notify webhook https://h.example {\n  include_answer yes\n }\n}",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestCaddyfileTokenSources: the subdirectives of secret rotation and of
// identity-provider tokens.
func TestCaddyfileTokenSources(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		jwt_previous_secrets {env.OLD_JWT_SECRET} {env.OLDER_JWT_SECRET}
		jwt_oidc_issuer https://login.example/realms/acme
		jwt_jwks https://login.example/realms/acme/protocol/openid-connect/certs
		jwt_audience https://fb.example/mcp
		jwt_jwks_insecure_loopback_for_tests
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(h.JWTPreviousSecrets, ",") != "{env.OLD_JWT_SECRET},{env.OLDER_JWT_SECRET}" ||
		h.JWTOIDCIssuer != "https://login.example/realms/acme" || h.JWTJWKS != "https://login.example/realms/acme/protocol/openid-connect/certs" ||
		!h.JWTJWKSInsecureLoopbackForTests {
		t.Fatalf("parsed %+v", h)
	}
	for in, want := range map[string]string{
		"mcp_feedback {\n jwt_previous_secrets\n}":                    "needs at least one value",
		"mcp_feedback {\n jwt_jwks\n}":                                "needs a value",
		"mcp_feedback {\n jwt_oidc_issuer a b\n}":                     "takes one value",
		"mcp_feedback {\n jwt_jwks_insecure_loopback_for_tests on\n}": "takes no value",
		"mcp_feedback {\n jwt_jwks https://a\n jwt_jwks https://b\n}": "set twice",
		"mcp_feedback {\n jwt_jwks_insecure_loopback_for_test\n}":     "unknown mcp_feedback option",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// TestProvisionJWKS: Provision builds a JWKS-mode verifier (here from a
// loopback http JWKS through the test switch), an RS256 token from the
// provider verifies, an HS256 one does not, and Cleanup stops the fetches.
func TestProvisionJWKS(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_, _ = w.Write(doc)
	}))
	defer srv.Close()

	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	// The store is a module that does not exist, so Provision fails after
	// building the verifier (a full Provision needs a running Caddy: the
	// e2e test TestJWKSTokens): Cleanup must close it all the same.
	h := Handler{JWTJWKS: srv.URL + "/jwks", JWTIssuer: "https://idp.example", JWTAudience: "https://fb.example/mcp",
		JWTJWKSInsecureLoopbackForTests: true, StoreRaw: json.RawMessage(`{"backend":"mcpfb_test_none"}`)}
	if err := h.Provision(ctx); err == nil || !strings.Contains(err.Error(), "store") {
		t.Fatalf("Provision: %v", err)
	}
	sign := func(kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "https://idp.example", "aud": "https://fb.example/mcp",
			"sub": "alice", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"], tok.Header["typ"] = kid, "at+jwt"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if c, aerr := h.verifier.Verify(sign("k1")); aerr != nil || c.Subject != "alice" {
		t.Fatalf("provider token: %v", aerr)
	}
	hs, _ := auth.Mint([]byte(strings.Repeat("s", 32)), auth.TokenOptions{Subject: "alice", TTL: time.Hour, Issuer: "https://idp.example", Audience: "https://fb.example/mcp"})
	if _, aerr := h.verifier.Verify(hs); aerr == nil || aerr.Reason != "algorithm" {
		t.Fatalf("HS256 token in JWKS-only mode: %v", aerr)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	before := fetches.Load()
	if _, aerr := h.verifier.Verify(sign("k2")); aerr == nil {
		t.Fatal("unknown kid accepted")
	}
	if n := fetches.Load(); n != before {
		t.Fatalf("fetched after Cleanup (%d → %d)", before, n)
	}
}
