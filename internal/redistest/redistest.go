// Package redistest runs a throwaway redis-server for tests: on a free
// loopback port, in the test's temporary directory, with AOF on so that
// kill -9 / restart tests see what a production setup would keep.
//
// Each Server is a process this package started; it is killed when the test
// ends, and nothing else is ever signalled.
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
	"syscall"
	"testing"
	"time"
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

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// Start runs redis-server for the duration of t. extraArgs are appended to
// the command line (for example "--appendfsync", "always"), so they override
// the defaults. redis-server must be on PATH: CI installs it, and a missing
// one is a broken setup rather than a reason to skip.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH (run `make deps` to install it): %v", err)
	}
	dir := t.TempDir()
	s := &Server{bin: bin, dir: dir}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Kill)

	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
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
			return s
		}
		s.Kill()
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// URL is the address in the form rueidis.ParseURL and the store take.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Dir is the data directory (AOF files and redis.log).
func (s *Server) Dir() string { return s.dir }

// Kill sends SIGKILL and waits for the process to exit. It does nothing if
// the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Stop asks the server to shut down (SIGTERM, which makes it flush the AOF)
// and waits for it; if it does not exit within 10 s it is killed.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-s.exited:
		s.cmd = nil
	case <-t.C:
		s.killLocked()
	}
}

// Signal sends sig to the server, for example SIGSTOP and SIGCONT to make
// it hang without closing connections.
func (s *Server) Signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("redistest: server is not running")
	}
	return s.cmd.Process.Signal(sig)
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

// start launches the process and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	// The child keeps its own descriptor; ours is not needed after Start.
	defer logf.Close()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited

	if err := s.waitReady(exited); err != nil {
		return fmt.Errorf("redis-server on %s: %w\n--- redis.log (tail) ---\n%s", s.Addr, err, s.logTail())
	}
	return nil
}

// waitReady polls with PING until +PONG. While Redis loads its AOF it
// answers -LOADING, which counts as not ready yet.
func (s *Server) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if last = ping(s.Addr); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", readyTimeout, last)
		}
		t := time.NewTimer(probeInterval)
		select {
		case <-exited:
			t.Stop()
			return errors.New("exited before it was ready")
		case <-t.C:
		}
	}
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

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return err.Error()
	}
	const limit = 4000
	if len(b) > limit {
		b = b[len(b)-limit:]
	}
	return string(b)
}

// freePort asks the kernel for an unused loopback port. Another process can
// take it before redis-server binds it; Start retries for that case.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
