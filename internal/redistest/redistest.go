// Package redistest runs a throwaway redis-server for tests and
// cmd/feedback-bench: on a free loopback port, in a temporary directory,
// with AOF on so that kill -9 / restart tests see what a production setup
// would keep.
//
// Each Server is a process this package started (through internal/harness);
// Start's is killed when the test ends, and nothing else is ever signalled.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
)

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	// startAttempts covers the window between picking a free port and
	// redis-server binding it, in which another process may take it.
	startAttempts = 3
	probeInterval = 20 * time.Millisecond
)

// Server is one redis-server process.
type Server struct {
	// Addr is host:port, always on 127.0.0.1.
	Addr string

	bin  string
	dir  string
	args []string

	mu   sync.Mutex
	proc *harness.Process // nil when not running
}

// Start runs redis-server for the duration of t, in t's temporary
// directory (see StartIn).
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	s, err := StartIn(t.TempDir(), extraArgs...)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Kill)
	return s
}

// StartIn runs redis-server with its data and redis.log in dir (created if
// missing) until Kill or Stop. extraArgs are appended to the command line
// (for example "--appendfsync", "always"), so they override the defaults.
// redis-server must be on PATH: CI installs it, and a missing one is a
// broken setup rather than a reason to skip.
func StartIn(dir string, extraArgs ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redistest: redis-server is not on PATH (run `make deps` to install it): %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	s := &Server{bin: bin, dir: dir}
	var lastErr error
	for range startAttempts {
		port, err := harness.FreePort()
		if err != nil {
			return nil, fmt.Errorf("redistest: %w", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.args = append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--dir", dir,
			"--save", "",
			"--appendonly", "yes",
			"--appendfsync", "everysec",
			"--daemonize", "no",
		}, extraArgs...)
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
		s.Kill()
	}
	return nil, fmt.Errorf("redistest: %w", lastErr)
}

// URL is the address in the form rueidis.ParseURL and the store take.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Dir is the data directory (AOF files and redis.log).
func (s *Server) Dir() string { return s.dir }

// PID is the server's process id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.Cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to exit. It does nothing if
// the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
}

// Stop asks the server to shut down (SIGTERM, which makes it flush the AOF)
// and waits for it; if it does not exit within 10 s it is killed.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Stop(stopTimeout)
		s.proc = nil
	}
}

// Signal sends sig to the server, for example SIGSTOP and SIGCONT to make
// it hang without closing connections.
func (s *Server) Signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return errors.New("redistest: server is not running")
	}
	return s.proc.Signal(sig)
}

// Restart kills the server if it runs and starts it again on the same port
// and directory, so it reloads its AOF.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.Kill()
		t.Fatalf("redistest: restart: %v", err)
	}
}

// start launches the process and waits until it answers PING. While Redis
// loads its AOF it answers -LOADING, which counts as not ready yet.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	log := harness.LogFile{Path: filepath.Join(s.dir, "redis.log")}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	p, err := harness.StartProcess(cmd, log.Path)
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	s.proc = p
	var last error
	err = harness.Poll(readyTimeout, probeInterval, p.Done(), func() bool {
		last = ping(s.Addr)
		return last == nil
	})
	if err != nil && !errors.Is(err, harness.ErrExited) {
		err = fmt.Errorf("%w: %w", err, last)
	}
	if err != nil {
		return fmt.Errorf("redis-server on %s: %w\n--- redis.log (tail) ---\n%s", s.Addr, err, log.Tail(4000))
	}
	return nil
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}
