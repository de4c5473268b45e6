// Package e2e drives the real Caddy binary (cmd/caddy, built once per test
// run) over real HTTP and HTTPS, with the memory store and a real Redis.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	caddyBin string
	xdgRoot  string
)

const secret = "e2e-secret-0123456789abcdef0123456789abcdef"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mcpfb-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	xdgRoot = dir
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, "../cmd/caddy")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caddy:", err)
		return 1
	}
	return m.Run()
}

// freePort asks the kernel for an unused loopback port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Caddy is one running caddy process.
type Caddy struct {
	t                   testing.TB
	cmd                 *exec.Cmd
	dir                 string
	HTTPPort, HTTPSPort int
	AdminPort           int
	Globals             string // more global options, one per line
	HTTP, HTTPS         string // base URLs
	Client              *http.Client
	env                 []string
	logs                *syncBuffer
	done                chan struct{}
	exitErr             error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// globals are the options every test config starts with: loopback only,
// no trust-store changes, no autosave, state in the test's temp dir.
func (c *Caddy) globals() string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	skip_install_trust
	local_certs
	persist_config off
	auto_https disable_redirects
	grace_period 5s
	storage file_system %s
%s}
`, c.AdminPort, c.HTTPPort, c.HTTPSPort, filepath.Join(c.dir, "storage"), c.Globals)
}

// newCaddy prepares ports and directories; sites is the Caddyfile after the
// global options, with {HTTP} and {HTTPS} standing for the two ports.
func newCaddy(t testing.TB, env ...string) *Caddy {
	t.Helper()
	c := &Caddy{t: t, dir: t.TempDir(), HTTPPort: freePort(t), HTTPSPort: freePort(t), AdminPort: freePort(t), logs: &syncBuffer{}}
	c.HTTP = fmt.Sprintf("http://127.0.0.1:%d", c.HTTPPort)
	c.HTTPS = fmt.Sprintf("https://localhost:%d", c.HTTPSPort)
	c.env = append(os.Environ(),
		"JWT_SECRET="+secret,
		"XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(c.dir, "data"),
		"HOME="+c.dir,
		"HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=",
	)
	c.env = append(c.env, env...)
	c.Client = &http.Client{Timeout: 30 * time.Second}
	return c
}

func (c *Caddy) config(sites string) string {
	r := strings.NewReplacer("{HTTP}", fmt.Sprint(c.HTTPPort), "{HTTPS}", fmt.Sprint(c.HTTPSPort))
	return c.globals() + r.Replace(sites)
}

func (c *Caddy) writeConfig(sites string) string {
	c.t.Helper()
	path := filepath.Join(c.dir, fmt.Sprintf("Caddyfile.%d", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(c.config(sites)), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

// startCaddy runs caddy with sites and waits until /health answers on the
// plain-HTTP port (so every test config serves the module there).
func startCaddy(t testing.TB, sites string, env ...string) *Caddy {
	t.Helper()
	c := newCaddy(t, env...)
	c.start(sites)
	return c
}

func (c *Caddy) start(sites string) {
	t := c.t
	t.Helper()
	path := c.writeConfig(sites)
	c.cmd = exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Env = c.env
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan struct{})
	go func() { c.exitErr = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("caddy log:\n%s", tail(c.logs.String(), 6000))
		}
	})
	c.waitHealthy()
	if strings.Contains(sites, "{HTTPS}") {
		c.waitTLS()
	}
}

// waitTLS waits until the internal CA has issued the site certificate and
// trusts that CA for HTTPS, as a browser would after installing it.
func (c *Caddy) waitTLS() {
	c.t.Helper()
	rootPath := filepath.Join(c.dir, "storage", "pki", "authorities", "local", "root.crt")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if root, err := os.ReadFile(rootPath); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(root)
			c.Client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Proxy: nil}
			if resp, err := c.Client.Get(c.HTTPS + "/health"); err == nil {
				resp.Body.Close()
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("HTTPS did not become ready:\n%s", tail(c.logs.String(), 4000))
}

// waitHealthy polls /health until it answers: a readiness probe with a
// bounded deadline, not a sleep.
func (c *Caddy) waitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			c.t.Fatalf("caddy exited early (%v):\n%s", c.exitErr, tail(c.logs.String(), 4000))
		default:
		}
		resp, err := http.Get(c.HTTP + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 || resp.StatusCode == 503 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("caddy did not become ready:\n%s", tail(c.logs.String(), 4000))
}

func (c *Caddy) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// reload loads new sites through `caddy reload`, as an operator would.
func (c *Caddy) reload(sites string) {
	c.t.Helper()
	path := c.writeConfig(sites)
	cmd := exec.Command(caddyBin, "reload", "--config", path, "--adapter", "caddyfile", "--address", fmt.Sprintf("127.0.0.1:%d", c.AdminPort), "--force")
	cmd.Env = c.env
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("caddy reload: %v\n%s", err, out)
	}
}

// caddyCmd runs a caddy subcommand to completion.
func caddyCmd(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// eventually polls cond until it holds or bound passes: a readiness probe
// on state outside the test (a process, Redis), never a fixed sleep. It
// reports whether cond held.
func eventually(bound time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(bound); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Response is a decoded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

func do(t testing.TB, client *http.Client, method, url, body string, headers ...string) Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}
