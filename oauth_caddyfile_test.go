package mcpfeedback

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestOAuthOptions: the OAuth options parse, default and fail as
// documented, and `login` alone is a complete configuration (no
// jwt_secret), while without login the module still refuses to run
// unauthenticated.
func TestOAuthOptions(t *testing.T) {
	for in, want := range map[string]int{
		"mcp_feedback {\n public_url https://fb.example\n login caddy\n}":                                    20,
		"mcp_feedback {\n public_url https://fb.example\n login caddy\n oauth_registrations_per_hour 5\n}":   5,
		"mcp_feedback {\n public_url https://fb.example\n login caddy\n oauth_registrations_per_hour off\n}": -1,
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if _, err := h.resolve(); err != nil {
			t.Fatalf("%q: login without jwt_secret refused: %v", in, err)
		}
		if h.OAuthRegistrationsPerHour != want {
			t.Errorf("%q: %d registrations an hour, want %d", in, h.OAuthRegistrationsPerHour, want)
		}
	}
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n oauth_cimd_insecure_loopback_for_tests\n}")); err != nil || !h.OAuthCIMDInsecureLoopbackForTests {
		t.Fatalf("the test switch: %v", err)
	}
	for in, says := range map[string]string{
		"mcp_feedback {\n oauth_cimd_insecure_loopback_for_tests yes\n}": "takes no value",
		"mcp_feedback {\n oauth_registrations_per_hour many\n}":          "",
		"mcp_feedback {\n oauth_registrations_per_hour 1 2\n}":           "",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want an error saying %q", in, err, says)
		}
	}
	var none Handler
	if _, err := none.resolve(); err == nil || !strings.Contains(err.Error(), "login") {
		t.Errorf("no secret, no JWKS, no login: %v, want a refusal that names login as an option", err)
	}
}
