package mcpfeedback

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

func TestQuotaOptions(t *testing.T) {
	for in, want := range map[string]store.Quota{
		"mcp_feedback {\n}": {MaxPending: 100, CreatesPerMinute: 60},
		"mcp_feedback {\n max_pending_per_subject 5\n creates_per_minute 10\n}":    {MaxPending: 5, CreatesPerMinute: 10},
		"mcp_feedback {\n max_pending_per_subject off\n creates_per_minute off\n}": {},
	} {
		h := Handler{JWTSecret: "0123456789abcdef0123456789abcdef"}
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		cfg, err := h.resolve()
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.quota; got != want {
			t.Errorf("%q: quota %+v, want %+v", in, got, want)
		}
	}
	for _, in := range []string{"mcp_feedback {\n creates_per_minute 0\n}", "mcp_feedback {\n creates_per_minute\n}", "mcp_feedback {\n max_pending_per_subject lots\n}", "mcp_feedback {\n creates_per_minute off 3\n}"} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestMCPSessionCapOption(t *testing.T) {
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n mcp_max_sessions_per_subject 7\n}")); err != nil || h.MCPMaxSessionsPerSubject != 7 {
		t.Fatalf("%v %d", err, h.MCPMaxSessionsPerSubject)
	}
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mcp_feedback {\n mcp_max_sessions_per_subject none\n}")); err == nil {
		t.Fatal("a non-number accepted")
	}
}
