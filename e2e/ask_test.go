package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// askProc is one `caddy mcp-feedback ask` process: the real binary, as a
// shell script or CI job runs it.
type askProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr *syncBuffer
	lines  chan string
	done   chan struct{}
	err    error
}

func startAsk(t *testing.T, env []string, args ...string) *askProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	p := &askProc{t: t, stderr: &syncBuffer{}, lines: make(chan string, 100), done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, caddyBin, append([]string{"mcp-feedback", "ask"}, args...)...)
	p.cmd.Env = env
	p.cmd.Stdout = &p.stdout
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var scanned sync.WaitGroup
	scanned.Go(func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			_, _ = p.stderr.Write(append(sc.Bytes(), '\n'))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
	})
	go func() {
		scanned.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("ask stderr:\n%s", tail(p.stderr.String(), 4000))
		}
	})
	return p
}

// link reads stderr until the answer link is printed (the question exists
// by then) and returns the session id and the capability token.
func (p *askProc) link() (id, capTok string) {
	p.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				p.t.Fatalf("ask ended (%v) without printing a link:\n%s", p.err, p.stderr.String())
			}
			link, found := strings.CutPrefix(line, "Answer at: ")
			if !found {
				continue
			}
			u, err := url.Parse(link)
			if err != nil {
				p.t.Fatalf("link %q: %v", link, err)
			}
			id = strings.TrimPrefix(u.Path, "/feedback/")
			capTok, found = strings.CutPrefix(u.Fragment, "t=")
			if i := strings.IndexAny(capTok, "&?"); i >= 0 {
				capTok = capTok[:i] // page options after the token
			}
			if !found || id == "" || capTok == "" {
				p.t.Fatalf("link %q has no id or token", link)
			}
			return id, capTok
		case <-timeout:
			p.t.Fatalf("no link on stderr after 30 s:\n%s", p.stderr.String())
		}
	}
}

// exit waits for the process and returns its exit status.
func (p *askProc) exit() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.t.Fatalf("ask did not exit:\n%s", p.stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("ask: %v", p.err)
	return -1
}

type askResult struct {
	SessionID string `json:"sessionId"`
	Status    string `json:"status"`
	Result    *struct {
		SelectedOptions []string `json:"selectedOptions"`
		FreeText        string   `json:"freeText"`
	} `json:"result"`
}

func (p *askProc) result() askResult {
	p.t.Helper()
	var r askResult
	if err := json.Unmarshal(p.stdout.Bytes(), &r); err != nil {
		p.t.Fatalf("stdout is not the result JSON: %v\n%s", err, p.stdout.String())
	}
	return r
}

// TestAskCommand: `caddy mcp-feedback ask` against a running server, both
// real binaries: answered (waiting on the WebSocket, and by polling),
// withdrawn with Ctrl+C, expired, --wait=false, and a refused question.
func TestAskCommand(t *testing.T) {
	c := startCaddy(t, strings.Replace(memorySites, "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmin_timeout 1s", 1))
	alice := token(t, "alice")

	for _, mode := range []string{"websocket", "polling"} {
		t.Run("answered/"+mode, func(t *testing.T) {
			args := []string{"--url", c.HTTP, "--sub", "alice", "--option", "yes", "--option", "no", "--timeout", "2m", "--qr", "Deploy **v2.3**?"}
			if mode == "polling" {
				args = append(args, "--no-websocket")
			} else {
				// Polls an hour apart: only the WebSocket can bring the answer in time.
				args = append(args, "--poll-interval", "1h")
			}
			// No token given: it is minted with JWT_SECRET (in c.env).
			p := startAsk(t, c.env, args...)
			id, capTok := p.link()
			// Answer as the person's app would, with the link's token.
			if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+id+"/submit", `{"selectedOptions":["yes"],"freeText":"go"}`, "X-Feedback-Token", capTok); r.Status != 200 {
				t.Fatalf("submit: %d %s", r.Status, r.Body)
			}
			if code := p.exit(); code != 0 {
				t.Fatalf("exit %d, want 0", code)
			}
			if !strings.Contains(p.stderr.String(), "█") {
				t.Errorf("--qr printed no QR code:\n%s", p.stderr.String())
			}
			res := p.result()
			if res.SessionID != id || res.Status != "submitted" || res.Result == nil || strings.Join(res.Result.SelectedOptions, ",") != "yes" || res.Result.FreeText != "go" {
				t.Errorf("stdout %s", p.stdout.String())
			}
			// The session is alice's: --sub named the owner of the minted token.
			if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+id+"/result", "", "Authorization", "Bearer "+alice); r.Status != 200 || strings.TrimSpace(r.Body) != strings.TrimSpace(p.stdout.String()) {
				t.Errorf("GET result %d %s, want what ask printed", r.Status, r.Body)
			}
		})
	}

	t.Run("ctrl-c withdraws", func(t *testing.T) {
		p := startAsk(t, append(c.env, "FEEDBACK_TOKEN="+alice, "FEEDBACK_URL="+c.HTTP), "Run the migration?", "--option", "yes", "--option", "no")
		id, _ := p.link()
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := p.exit(); code != 3 {
			t.Fatalf("exit %d, want 3", code)
		}
		if res := p.result(); res.Status != "cancelled" || res.Result != nil {
			t.Errorf("stdout %s", p.stdout.String())
		}
		if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+id+"/status", "", "Authorization", "Bearer "+alice); r.Status != 200 || !strings.Contains(r.Body, `"status":"cancelled"`) {
			t.Errorf("status after Ctrl+C: %d %s", r.Status, r.Body)
		}
	})

	t.Run("expired", func(t *testing.T) {
		start := time.Now()
		p := startAsk(t, c.env, "--url", c.HTTP, "--timeout", "2s", "Quick: ship it?")
		p.link()
		if code := p.exit(); code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
		if res := p.result(); res.Status != "expired" {
			t.Errorf("stdout %s", p.stdout.String())
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("expiry took %v to be noticed", d)
		}
	})

	t.Run("no wait", func(t *testing.T) {
		p := startAsk(t, c.env, "--url", c.HTTP, "--wait=false", "--token", alice, "--theme", "dark", "--lang", "zh", "--timeout", "2h", "Later?")
		id, capTok := p.link()
		if code := p.exit(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		var cr created
		if err := json.Unmarshal(p.stdout.Bytes(), &cr); err != nil || cr.SessionID != id || cr.Status != "pending" {
			t.Errorf("stdout %s", p.stdout.String())
		}
		// The page options reach the link, whether the server takes them
		// in the create body or not.
		if link := p.stderr.String(); !strings.Contains(link, "theme=dark") || !strings.Contains(link, "lang=zh") {
			t.Errorf("the link lacks theme and lang:\n%s", link)
		}
		// A timeout beyond max_timeout is moved into range, and the command says so.
		if !strings.Contains(p.stderr.String(), "Note from the server: timeout 7200 is above the maximum; using 3600 seconds") {
			t.Errorf("no warning about the clamped timeout:\n%s", p.stderr.String())
		}
		if r := do(t, c.Client, "POST", c.HTTP+"/feedback/"+id+"/view", `{"token":"`+capTok+`"}`); r.Status != 200 {
			t.Errorf("the link's token does not open the question: %d %s", r.Status, r.Body)
		}
	})

	t.Run("refused", func(t *testing.T) {
		args := []string{"--url", c.HTTP, "Pick one"}
		for i := range 11 {
			args = append(args, "--option", string(rune('a'+i)))
		}
		p := startAsk(t, c.env, args...)
		if code := p.exit(); code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		if want := "caddy mcp-feedback ask: the question could not be asked: 400 Bad Request (invalid_request): predefinedOptions has 11 entries; the limit is 10"; strings.TrimSpace(p.stderr.String()) != want {
			t.Errorf("stderr %q, want %q", p.stderr.String(), want)
		}
		if p.stdout.Len() != 0 {
			t.Errorf("stdout %q, want nothing", p.stdout.String())
		}
	})
}
