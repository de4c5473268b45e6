package mcpfeedback

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
)

func TestNotifyCaddyfile(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`mcp_feedback {
		notify webhook https://hooks.example.com/a {
			header Authorization "Bearer x"
			secret {env.HOOK_SECRET}
			format slack
			events created expired
		}
		notify webhook https://ntfy.example.com/topic {
			format ntfy
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Notify) != 2 || h.Notify[0].Headers["Authorization"] != "Bearer x" || h.Notify[0].Secret != "{env.HOOK_SECRET}" ||
		h.Notify[0].Format != "slack" || strings.Join(h.Notify[0].Events, ",") != "created,expired" || h.Notify[1].Format != "ntfy" {
		t.Fatalf("parsed %+v", h.Notify)
	}
	t.Setenv("HOOK_SECRET", "from-env")
	hooks, err := h.webhooks()
	if err != nil {
		t.Fatal(err)
	}
	if hooks[0].Secret != "from-env" || strings.Join(hooks[0].Events, ",") != notify.EventCreated+","+notify.EventExpired {
		t.Fatalf("resolved %+v", hooks[0])
	}
	for in, want := range map[string]string{
		"mcp_feedback {\n notify email a@b\n}":                           "`notify ntfy <topic-url>",
		"mcp_feedback {\n notify webhook\n}":                             "needs a URL",
		"mcp_feedback {\n notify webhook https://x {\n retries 3\n }\n}": "unknown notify webhook option",
		"mcp_feedback {\n notify webhook https://x {\n header a\n }\n}":  "name and a value",
		"mcp_feedback {\n notify webhook https://x {\n events\n }\n}":    "at least one",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	for _, c := range []WebhookConfig{{URL: "ftp://x"}, {URL: "https://x", Format: "xml"}, {URL: "https://x", Events: []string{"replied"}}} {
		h := Handler{Notify: []WebhookConfig{c}}
		if _, err := h.webhooks(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
