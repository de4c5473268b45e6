package mcpfeedback

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
)

// TestTokenCommand: the token command refuses lifetimes past the cap, takes
// feedback:answer, and with --print-jti names the id that can revoke it.
func TestTokenCommand(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	t.Setenv("JWT_SECRET", secret)
	run := func(args ...string) (string, string, error) {
		c := tokenCommand()
		var out, errOut bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&errOut)
		c.SetArgs(args)
		c.SilenceUsage, c.SilenceErrors = true, true
		err := c.Execute()
		return out.String(), errOut.String(), err
	}
	for _, args := range [][]string{
		{"--sub", "a", "--ttl", "876000h"},
		{"--sub", "a", "--ttl", "721h"},
		{"--sub", "a", "--scope", "feedback:admin"},
	} {
		if out, _, err := run(args...); err == nil {
			t.Errorf("%v minted %s", args, out)
		}
	}
	out, errOut, err := run("--sub", "a", "--ttl", "720h", "--scope", "feedback:answer,feedback:read", "--print-jti")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewVerifier([]byte(secret), "", "")
	c, aerr := v.Verify(strings.TrimSpace(out))
	if aerr != nil || !c.HasScope(auth.ScopeAnswer) || c.HasScope(auth.ScopeCreate) {
		t.Fatalf("token %q: %v %+v", out, aerr, c)
	}
	if errOut != "jti: "+c.ID+"\n" || c.ID == "" {
		t.Fatalf("--print-jti wrote %q; the token's jti is %q", errOut, c.ID)
	}
	if _, _, err := run("--sub", "a", "--ttl", "2160h", "--max-ttl", "2160h"); err != nil {
		t.Fatalf("raised cap: %v", err)
	}
	if out, errOut, _ := run("--sub", "a"); strings.Count(out, "\n") != 1 || errOut != "" {
		t.Fatalf("default output %q / %q: one line, nothing else", out, errOut)
	}
}
