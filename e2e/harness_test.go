// Package e2e drives the real Caddy binary (cmd/caddy, built once per test
// run) over real HTTP and HTTPS, with the memory store and a real Redis.
package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
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
	if err := harness.BuildCaddy(caddyBin, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// The helpers below are the test-facing side of internal/harness (shared
// with cmd/feedback-bench): they fail the test instead of returning errors.

// freePort asks the kernel for an unused loopback port.
//
//lint:ignore U1000 part of the harness for test files, as newCaddy's ports come from harness.NewCaddy
func freePort(t testing.TB) int {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Caddy is one running caddy process: harness.Caddy (ports, base URLs,
// Client, Globals, Config, …) bound to a test.
type Caddy struct {
	*harness.Caddy
	t       testing.TB
	env     []string        // the process environment, with JWT_SECRET
	logs    harness.LogFile // what caddy logged, across start and reload
	cmd     *exec.Cmd       // the running process, set by start
	done    chan struct{}   // closed once it has exited and exitErr is set
	exitErr error
}

// syncBuffer is an io.Writer that can be read while a process writes it.
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

// newCaddy prepares ports and a directory in t's temp dir; env is added to
// the environment after JWT_SECRET. Set Globals, then start.
func newCaddy(t testing.TB, env ...string) *Caddy {
	t.Helper()
	hc, err := harness.NewCaddy(caddyBin, t.TempDir(), append([]string{"JWT_SECRET=" + secret}, env...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &Caddy{Caddy: hc, t: t, env: hc.Env, logs: hc.Logs}
}

// writeConfig writes the Caddyfile for sites (see harness.Caddy.Config),
// with {HTTP} and {HTTPS} standing for the two ports, and returns its path.
func (c *Caddy) writeConfig(sites string) string {
	c.t.Helper()
	path, err := c.WriteConfig(sites)
	if err != nil {
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

// start runs caddy with sites until the test ends (printing its log if the
// test failed) and waits until it serves, over HTTPS too if sites has an
// {HTTPS} site.
func (c *Caddy) start(sites string) {
	t := c.t
	t.Helper()
	if err := c.Launch(sites); err != nil {
		t.Fatal(err)
	}
	p := c.Process()
	c.cmd, c.done = p.Cmd, make(chan struct{})
	go func(done chan struct{}) { <-p.Done(); c.exitErr = p.Err(); close(done) }(c.done)
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("caddy log:\n%s", c.logs.Tail(6000))
		}
	})
	c.waitHealthy()
	if strings.Contains(sites, "{HTTPS}") {
		c.waitTLS()
	}
}

// waitTLS waits until HTTPS works and makes Client trust the local CA.
func (c *Caddy) waitTLS() {
	c.t.Helper()
	if err := c.WaitTLS(); err != nil {
		c.t.Fatal(err)
	}
}

// waitHealthy polls /health until it answers: a readiness probe with a
// bounded deadline, not a sleep.
func (c *Caddy) waitHealthy() {
	c.t.Helper()
	if err := c.WaitHealthy(); err != nil {
		c.t.Fatal(err)
	}
}

// stop sends SIGTERM (SIGKILL after 15 s) and waits until exitErr is set.
func (c *Caddy) stop() {
	c.Stop()
	if c.done != nil {
		<-c.done
	}
}

// reload loads new sites through `caddy reload`, as an operator would.
func (c *Caddy) reload(sites string) {
	c.t.Helper()
	if err := c.Reload(sites); err != nil {
		c.t.Fatal(err)
	}
}

// caddyCmd runs a caddy subcommand to completion.
func caddyCmd(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	return harness.RunCaddy(caddyBin, env, args...)
}

// eventually polls cond until it holds or bound passes: a readiness probe
// on state outside the test (a process, Redis), never a fixed sleep. It
// reports whether cond held.
func eventually(bound time.Duration, cond func() bool) bool {
	return harness.Poll(bound, 20*time.Millisecond, nil, cond) == nil
}

func tail(s string, n int) string { return harness.Tail(s, n) }

// Response is a decoded HTTP response.
type Response = harness.Response

// do sends one request (see harness.Do) and fails the test if no response
// arrives; a body cut short is returned as read.
func do(t testing.TB, client *http.Client, method, url, body string, headers ...string) Response {
	t.Helper()
	r, err := harness.Do(client, method, url, body, headers...)
	if r.Status == 0 {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}
