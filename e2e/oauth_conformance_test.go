package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestOAuthConformance: the MCP conformance suite's `authorization` command
// (scenarios authorization-server-metadata-endpoint and
// authorization-code-grant) against the real binary's authorization
// server, the person's sign-in (basic_auth) and consent driven in headless
// Chromium. The suite listens for the callback itself.
func TestOAuthConformance(t *testing.T) {
	c := startMCPCaddy(t, oauthSites(t, "http", ""))
	port := freePort(t)
	callback := fmt.Sprintf("http://127.0.0.1:%d/callback", port)
	r := do(t, c.Client, "POST", c.HTTP+"/oauth/register", `{"client_name":"MCP conformance","redirect_uris":["`+callback+`"]}`)
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if json.Unmarshal([]byte(r.Body), &reg) != nil || r.Status != 201 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node22(t), "node_modules/@modelcontextprotocol/conformance/dist/index.js",
		"authorization", "--url", c.HTTP, "--client-id", reg.ClientID, "--resource", c.HTTP+"/mcp",
		"-p", fmt.Sprint(port), "-o", t.TempDir())
	cmd.Dir = mcpjsDir
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NO_PROXY=*", "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The suite prints the authorization URL and waits for the callback.
	authURL := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stdout, out))
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, c.HTTP+"/oauth/authorize?") {
				authURL <- line
			}
		}
		done <- cmd.Wait()
	}()
	select {
	case u := <-authURL:
		tab := newTab(t, newBrowser(t), desktop)
		if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": "Basic " + b64("alice:alice-password")}}); err != nil {
			t.Fatal(err)
		}
		step(t, tab, "consent", chromedp.Navigate(u), chromedp.WaitVisible(chromedp.ID("approve")), chromedp.Click(chromedp.ID("approve")))
	case err := <-done:
		t.Fatalf("conformance ended before asking for the browser: %v\n%s", err, tail(out.String(), 4000))
	case <-ctx.Done():
		t.Fatalf("no authorization URL from the suite:\n%s", tail(out.String(), 4000))
	}
	select {
	case err := <-done:
		summary := out.String()
		for _, must := range []string{"✓ authorization-server-metadata-endpoint: 2 passed, 0 failed", "✓ authorization-code-grant: 1 passed, 0 failed"} {
			if !strings.Contains(summary, must) {
				t.Errorf("conformance summary lacks %q:\n%s", must, tail(summary, 6000))
			}
		}
		if err != nil {
			t.Fatalf("conformance: %v\n%s", err, tail(summary, 6000))
		}
	case <-ctx.Done():
		t.Fatalf("conformance did not finish:\n%s", tail(out.String(), 4000))
	}
}
