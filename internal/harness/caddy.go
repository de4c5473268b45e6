package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// CaddyPackage is the Caddy build with this module compiled in.
const CaddyPackage = "github.com/mcpfeedback/caddy-mcp-feedback/cmd/caddy"

const (
	caddyReadyTimeout = 60 * time.Second
	caddyProbeEvery   = 50 * time.Millisecond
	caddyStopGrace    = 15 * time.Second
	caddyCmdTimeout   = 60 * time.Second
)

// probeClient asks for /health while Caddy comes up; its timeout bounds a
// probe that connects but gets no answer.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// BuildCaddy builds CaddyPackage into dst; the go command's output goes to out.
func BuildCaddy(dst string, out io.Writer) error {
	cmd := exec.Command("go", "build", "-o", dst, CaddyPackage)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building caddy: %w", err)
	}
	return nil
}

// RunCaddy runs a caddy subcommand (adapt, validate, reload, …) to
// completion, within a minute, and returns its combined output.
func RunCaddy(bin string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), caddyCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Caddy is one caddy process: its ports, its directory and, once launched,
// the process. Configure the exported fields before Launch or Start.
type Caddy struct {
	Bin string // the caddy binary
	// Dir holds everything the instance writes: its Caddyfiles, storage
	// (the local CA), the XDG config and data directories and caddy.log.
	Dir                            string
	HTTPPort, HTTPSPort, AdminPort int
	HTTP, HTTPS, Admin             string // base URLs
	Globals                        string // more global options, one per line
	// Env is the process environment: this process's, with HOME and the XDG
	// directories moved into Dir, proxies cleared, then the env given to
	// NewCaddy.
	Env    []string
	Client *http.Client // trusts the local CA once WaitTLS has returned
	Logs   LogFile      // caddy's stdout and stderr, across every launch

	proc *Process
}

// NewCaddy prepares an instance in dir (created if missing) on three free
// loopback ports; env is added to the environment, last, so it wins.
func NewCaddy(bin, dir string, env ...string) (*Caddy, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	c := &Caddy{Bin: bin, Dir: dir, HTTPPort: ports[0], HTTPSPort: ports[1], AdminPort: ports[2]}
	c.HTTP = fmt.Sprintf("http://127.0.0.1:%d", c.HTTPPort)
	c.HTTPS = fmt.Sprintf("https://localhost:%d", c.HTTPSPort)
	c.Admin = fmt.Sprintf("http://127.0.0.1:%d", c.AdminPort)
	c.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"HOME="+dir,
		"HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=",
	)
	c.Env = append(c.Env, env...)
	c.Client = &http.Client{Timeout: 30 * time.Second}
	c.Logs = LogFile{filepath.Join(dir, "caddy.log")}
	return c, nil
}

// Config is the whole Caddyfile for sites: the global options every
// instance starts with (loopback only, no trust-store changes, no autosave,
// state in Dir), then Globals, then sites with {HTTP} and {HTTPS} standing
// for the two ports.
func (c *Caddy) Config(sites string) string {
	r := strings.NewReplacer("{HTTP}", fmt.Sprint(c.HTTPPort), "{HTTPS}", fmt.Sprint(c.HTTPSPort))
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
`, c.AdminPort, c.HTTPPort, c.HTTPSPort, filepath.Join(c.Dir, "storage"), c.Globals) + r.Replace(sites)
}

// WriteConfig writes Config(sites) to a new file in Dir and returns its path.
func (c *Caddy) WriteConfig(sites string) (string, error) {
	path := filepath.Join(c.Dir, fmt.Sprintf("Caddyfile.%d", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(c.Config(sites)), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// Start launches caddy with sites and waits until it serves /health on the
// plain-HTTP port (so every config must serve the module there) and, when
// sites has an {HTTPS} site, until HTTPS works. On failure it stops caddy.
func (c *Caddy) Start(sites string) error {
	if err := c.Launch(sites); err != nil {
		return err
	}
	err := c.WaitHealthy()
	if err == nil && strings.Contains(sites, "{HTTPS}") {
		err = c.WaitTLS()
	}
	if err != nil {
		c.Stop()
	}
	return err
}

// Launch runs `caddy run` with sites and returns without waiting for it.
func (c *Caddy) Launch(sites string) error {
	path, err := c.WriteConfig(sites)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.Bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = c.Env
	p, err := StartProcess(cmd, c.Logs.Path)
	if err != nil {
		return fmt.Errorf("starting caddy: %w", err)
	}
	c.proc = p
	return nil
}

// Process is the running (or exited) process; nil before Launch.
func (c *Caddy) Process() *Process { return c.proc }

func (c *Caddy) exited() <-chan struct{} {
	if c.proc == nil {
		return nil
	}
	return c.proc.Done()
}

// WaitHealthy polls /health until it answers 200, or 503 (up, store
// unreachable), within a minute; it fails at once if caddy exits.
func (c *Caddy) WaitHealthy() error {
	err := Poll(caddyReadyTimeout, caddyProbeEvery, c.exited(), func() bool {
		resp, err := probeClient.Get(c.HTTP + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusServiceUnavailable
	})
	if errors.Is(err, ErrExited) {
		return fmt.Errorf("caddy exited early (%v):\n%s", c.proc.Err(), c.Logs.Tail(4000))
	}
	if err != nil {
		return fmt.Errorf("caddy did not become ready (%v):\n%s", err, c.Logs.Tail(4000))
	}
	return nil
}

// WaitTLS waits until the internal CA has issued the site certificate and
// makes Client trust that CA, as a browser would after installing it.
func (c *Caddy) WaitTLS() error {
	rootPath := filepath.Join(c.Dir, "storage", "pki", "authorities", "local", "root.crt")
	err := Poll(caddyReadyTimeout, caddyProbeEvery, c.exited(), func() bool {
		root, err := os.ReadFile(rootPath)
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(root)
		c.Client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Proxy: nil}
		resp, err := c.Client.Get(c.HTTPS + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if err != nil {
		return fmt.Errorf("HTTPS did not become ready (%v):\n%s", err, c.Logs.Tail(4000))
	}
	return nil
}

// Stop sends SIGTERM to the process Launch started and waits for it to
// exit, killing it after 15 s. It does nothing if caddy is not running.
func (c *Caddy) Stop() {
	if c.proc != nil {
		c.proc.Stop(caddyStopGrace)
	}
}

// Reload loads new sites through `caddy reload`, as an operator would.
func (c *Caddy) Reload(sites string) error {
	path, err := c.WriteConfig(sites)
	if err != nil {
		return err
	}
	out, err := RunCaddy(c.Bin, c.Env, "reload", "--config", path, "--adapter", "caddyfile", "--address", fmt.Sprintf("127.0.0.1:%d", c.AdminPort), "--force")
	if err != nil {
		return fmt.Errorf("caddy reload: %w\n%s", err, out)
	}
	// The old configuration's server closes its idle keep-alive
	// connections as it shuts down; a POST sent on one of them just then
	// fails with EOF (net/http retries only idempotent requests). Start
	// afresh, as a client that notices the closed connection would.
	if c.Client != nil {
		c.Client.CloseIdleConnections()
	}
	return nil
}
