package mcpfeedback

import (
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
)

const attachSecret = "mcp_feedback {\n jwt_secret 0123456789abcdef0123456789abcdef\n"

// resolveAttach parses a site block and resolves its attachment rules.
func resolveAttach(t *testing.T, in string) (feedback.AttachRules, error) {
	t.Helper()
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatalf("%q: %v", in, err)
	}
	s, err := h.resolve()
	if err != nil {
		return feedback.AttachRules{}, err
	}
	return s.attach, nil
}

// TestAttachmentsCaddyfile: on by default with the documented defaults;
// the block sets each limit (sizes with units); off turns them off.
func TestAttachmentsCaddyfile(t *testing.T) {
	def, err := resolveAttach(t, attachSecret+"}")
	if err != nil || def.MaxSize != 5<<20 || def.MaxFiles != 5 || !slices.Equal(def.Types, validate.AttachmentTypes) || def.MaxBytesPerSubject != 100<<20 {
		t.Fatalf("defaults %+v %v", def, err)
	}
	set, err := resolveAttach(t, attachSecret+" attachments {\n max_size 2MiB\n max_files 3\n types image/png application/pdf\n max_bytes_per_subject 1GB\n }\n}")
	if err != nil || set.MaxSize != 2<<20 || set.MaxFiles != 3 || !slices.Equal(set.Types, []string{"image/png", "application/pdf"}) || set.MaxBytesPerSubject != 1e9 {
		t.Fatalf("set %+v %v", set, err)
	}
	noQuota, err := resolveAttach(t, attachSecret+" attachments {\n max_bytes_per_subject off\n }\n}")
	if err != nil || noQuota.MaxBytesPerSubject != 0 || noQuota.MaxFiles != 5 {
		t.Fatalf("quota off %+v %v", noQuota, err)
	}
	off, err := resolveAttach(t, attachSecret+" attachments off\n}")
	if err != nil || off.MaxFiles != 0 {
		t.Fatalf("off %+v %v", off, err)
	}
}

func TestAttachmentsCaddyfileErrors(t *testing.T) {
	for name, c := range map[string]struct{ in, want string }{
		"on":            {"mcp_feedback {\n attachments on\n}", "attachments takes `off` or a block"},
		"off and block": {"mcp_feedback {\n attachments off {\n max_files 2\n }\n}", "attachments off takes no block"},
		"unknown":       {"mcp_feedback {\n attachments {\n max_count 2\n }\n}", `unknown attachments option "max_count"`},
		"twice inside":  {"mcp_feedback {\n attachments {\n max_files 2\n max_files 3\n }\n}", "attachments: max_files is given twice"},
		"bad size":      {"mcp_feedback {\n attachments {\n max_size lots\n }\n}", `"lots" is not a size such as 5MiB`},
		"zero size":     {"mcp_feedback {\n attachments {\n max_size 0\n }\n}", `"0" is not a size`},
		"size off":      {"mcp_feedback {\n attachments {\n max_size off\n }\n}", `"off" is not a size`},
		"no types":      {"mcp_feedback {\n attachments {\n types\n }\n}", "types needs at least one value"},
	} {
		t.Run(name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	for block, want := range map[string]string{
		"types image/svg+xml": `type "image/svg+xml" cannot be proven by content sniffing`,
		"types text/html":     `type "text/html" cannot be proven`,
		"max_files 21":        "max_files must be from 1 to 20, not 21",
		"max_size 26MiB":      "max_size must be from 1 byte to 25MiB",
		"max_size 5MiB\n max_bytes_per_subject 1MiB": "max_bytes_per_subject must be at least max_size",
	} {
		if _, err := resolveAttach(t, attachSecret+" attachments {\n "+block+"\n }\n}"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %q", block, err, want)
		}
	}
}
