// Package harness runs the real processes that the e2e tests and
// cmd/feedback-bench drive, and talks to them: Caddy built with this module
// (Caddy), the child-process plumbing that redistest's redis-server shares
// (StartProcess, Poll, FreePort, LogFile), and one HTTP request helper (Do).
//
// Everything listens on 127.0.0.1 only, on ports the kernel hands out. A
// Process is only ever signalled through its own PID, and readiness is a
// bounded probe (Poll), never a sleep. Errors are plain errors, so a command
// can use the package as well as a test; the tests wrap it with testing.TB.
package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// FreePort asks the kernel for an unused loopback port. Another process can
// take it before the caller's server binds it.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Process is one child process started by StartProcess.
type Process struct {
	// Cmd is the started command; read it, don't start or wait on it.
	Cmd *exec.Cmd

	done chan struct{}
	err  error
}

// StartProcess starts cmd with its stdout and stderr appended to the file at
// logPath, and reaps it in the background.
func StartProcess(cmd *exec.Cmd, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log: %w", err)
	}
	// The child keeps its own descriptor; ours is not needed after Start.
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited (cmd.Wait's error); valid once Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether Done is closed.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process, for example SIGSTOP and SIGCONT to make
// it hang without closing connections.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits for the process to exit; if it has not
// exited after grace, it is killed. It does nothing once the process exited.
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Kill()
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// ErrExited is what Poll returns when the watched process exits first.
var ErrExited = errors.New("exited before it was ready")

// Poll calls ready every interval until it returns true (nil), exited is
// closed (ErrExited) or timeout has passed (an error saying so). ready is
// called at least once; exited may be nil.
func Poll(timeout, interval time.Duration, exited <-chan struct{}, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", timeout)
		}
		t := time.NewTimer(interval)
		select {
		case <-exited:
			t.Stop()
			return ErrExited
		case <-t.C:
		}
	}
}

// LogFile is the file a process's stdout and stderr go to.
type LogFile struct{ Path string }

// String is what the process has logged so far ("" before it logged).
func (f LogFile) String() string {
	b, err := os.ReadFile(f.Path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err.Error()
	}
	return string(b)
}

// Tail is the last n bytes of the log.
func (f LogFile) Tail(n int) string { return Tail(f.String(), n) }

// Tail is the last n bytes of s, marked with … when cut.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
