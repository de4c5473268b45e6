package mcpfeedback

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

const loginSecret = "jwt_secret 0123456789abcdef0123456789abcdef\n"

// TestLoginCaddyfile: the login block parses into the fields Provision
// reads, and resolves with its defaults.
func TestLoginCaddyfile(t *testing.T) {
	var h Handler
	in := "mcp_feedback {\n" + loginSecret + ` public_url https://fb.example/base
	login oidc https://idp.example/realms/x {
		client_id mcpfb
		client_secret {env.MCPFB_TEST_UNSET_SECRET}
		scopes email profile groups
		claim email
		allow alice@example.com @example.org
		session_ttl 8h
	}
}`
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	c := h.Login
	if c == nil || c.Mode != "oidc" || c.Issuer != "https://idp.example/realms/x" || c.ClientID != "mcpfb" ||
		c.ClientSecret != "{env.MCPFB_TEST_UNSET_SECRET}" || strings.Join(c.Scopes, " ") != "email profile groups" ||
		c.Claim != "email" || strings.Join(c.Allow, " ") != "alice@example.com @example.org" || time.Duration(c.SessionTTL) != 8*time.Hour {
		t.Fatalf("parsed %+v", c)
	}
	cfg, err := h.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.login; l.origin != "https://fb.example" || l.mount != "/base" || l.plainHTTP || strings.Join(l.scopes, " ") != "openid email profile groups" {
		t.Fatalf("resolved %+v", l)
	}

	// Defaults: claim sub, 12h, openid email profile.
	h = Handler{}
	in = "mcp_feedback {\n" + loginSecret + " public_url http://127.0.0.1:8080\n login oidc http://127.0.0.1:9/ {\n client_id c\n allow alice\n insecure_loopback_for_tests\n }\n}"
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if cfg, err = h.resolve(); err != nil {
		t.Fatal(err)
	}
	if l := cfg.login; l.claim != "sub" || l.sessionTTL != 12*time.Hour || strings.Join(l.scopes, " ") != "openid email profile" || !l.plainHTTP {
		t.Fatalf("defaults %+v", l)
	}

	h = Handler{}
	in = "mcp_feedback {\n" + loginSecret + " public_url https://fb.example\n login caddy header remote-user\n}"
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if cfg, err = h.resolve(); err != nil || cfg.login.header != "Remote-User" || cfg.login.mode != "caddy" {
		t.Fatalf("%+v %v", cfg.login, err)
	}
}

// TestLoginRefused: every misconfiguration of login fails the load with a
// message that names it.
func TestLoginRefused(t *testing.T) {
	const pub = " public_url https://fb.example\n"
	oidc := func(body string) string {
		return "mcp_feedback {\n" + loginSecret + pub + " login oidc https://idp.example {\n" + body + "\n }\n}"
	}
	for _, tc := range []struct{ name, in, want string }{
		{"no mode", "mcp_feedback {\n login\n}", "login needs a mode"},
		{"unknown mode", "mcp_feedback {\n login saml\n}", "caddy or oidc"},
		{"caddy junk", "mcp_feedback {\n login caddy remote-user\n}", "header <Name>"},
		{"caddy block", "mcp_feedback {\n login caddy {\n header x\n }\n}", "takes no block"},
		{"oidc no issuer", "mcp_feedback {\n login oidc\n}", "needs the provider's issuer"},
		{"oidc two issuers", "mcp_feedback {\n login oidc https://a https://b\n}", "one issuer"},
		{"oidc unknown option", oidc("client_id c\n allow x\n prompt login"), `unknown login oidc option "prompt"`},
		{"oidc option twice", oidc("client_id c\n client_id d"), "client_id is set twice"},
		{"login twice", "mcp_feedback {\n login caddy\n login caddy\n}", "login is set twice"},
		{"session_ttl junk", oidc("session_ttl soon"), "not a positive whole number of seconds"},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct{ name, in, want string }{
		{"no public_url", "mcp_feedback {\n" + loginSecret + " login caddy\n}", "login needs public_url"},
		{"http public_url off loopback", "mcp_feedback {\n" + loginSecret + " public_url http://fb.example\n login caddy\n}", "plain http is only for 127.0.0.1"},
		{"bad header", "mcp_feedback {\n" + loginSecret + pub + " login caddy header X(User)\n}", "not a header name"},
		{"no client_id", oidc("allow x"), "needs client_id"},
		{"client_id from an unset env", oidc("client_id {env.MCPFB_TEST_UNSET_SECRET}\n allow x"), "needs client_id"},
		{"no allow", oidc("client_id c"), "needs allow"},
		{"domain without claim email", oidc("client_id c\n allow @example.com"), "needs claim email"},
		{"star and more", oidc("client_id c\n allow * alice"), "list nothing else"},
		{"bad claim", oidc("client_id c\n allow x\n claim name"), "claim must be sub, email or preferred_username"},
		{"bad scope", oidc("client_id c\n allow x\n scopes \"a b\""), "is not a scope"},
		{"short session", oidc("client_id c\n allow x\n session_ttl 30s"), "shorter than a minute"},
		{"http issuer", "mcp_feedback {\n" + loginSecret + pub + " login oidc http://127.0.0.1:9 {\n client_id c\n allow x\n }\n}", "must be https"},
		{"http issuer off loopback", "mcp_feedback {\n" + loginSecret + pub + " login oidc http://idp.example {\n client_id c\n allow x\n insecure_loopback_for_tests\n }\n}", "must be https"},
		{"issuer with a query", "mcp_feedback {\n" + loginSecret + pub + " login oidc https://idp.example/?x=1 {\n client_id c\n allow x\n }\n}", "without query"},
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in)); err != nil {
			t.Errorf("%s: parse: %v", tc.name, err)
			continue
		}
		if _, err := h.resolve(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// JSON can say what the Caddyfile parser would refuse.
	h := Handler{JWTSecret: strings.Repeat("s", 32), PublicURL: "https://fb.example", Login: &LoginConfig{Mode: "caddy", Issuer: "https://idp.example"}}
	if _, err := h.resolve(); err == nil || !strings.Contains(err.Error(), "login caddy takes only header") {
		t.Errorf("caddy with oidc options: %v", err)
	}
}

// TestCaddyUser: the header forward_auth copies is believed only on a
// request whose authenticator answered 2xx; {http.auth.user.id} only
// comes from Caddy's authentication.
func TestCaddyUser(t *testing.T) {
	req := func(status any, users ...string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		for _, u := range users {
			r.Header.Add("Remote-User", u)
		}
		repl := caddy.NewReplacer()
		if status != nil {
			repl.Set("http.reverse_proxy.status_code", status)
		}
		return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	}
	header := caddyUser("Remote-User")
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"outside Caddy", httptest.NewRequest("GET", "/", nil), ""},
		{"forward_auth did not run", req(nil, "mallory"), ""},
		{"forward_auth said 2xx", req(200, "alice"), "alice"},
		{"forward_auth said 204", req(204, "alice"), "alice"},
		{"some proxy said 401", req(401, "mallory"), ""},
		{"not an int", req("200", "mallory"), ""},
		{"two values", req(200, "alice", "mallory"), ""},
	} {
		if got := header(tc.r); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	r := req(200, "alice")
	if got := caddyUser("")(r); got != "" {
		t.Errorf("basic-auth mode read a header: %q", got)
	}
	r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set("http.auth.user.id", "bob")
	if got := caddyUser("")(r); got != "bob" {
		t.Errorf("basic-auth mode: %q", got)
	}
}
