package mcpfeedback

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"rsc.io/qr"
)

const askSecret = "ask-test-secret-0123456789abcdef0123456789"

func TestParseAskTimeout(t *testing.T) {
	for in, want := range map[string]int64{"300": 300, "90s": 90, "10m": 600, "1h30m": 5400, " 45 ": 45} {
		if got, err := parseAskTimeout(in); err != nil || got != want {
			t.Errorf("parseAskTimeout(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{"0": "positive", "-5": "positive", "1.5s": "whole number", "1500ms": "whole number", "soon": "neither", "-1m": "positive"} {
		if _, err := parseAskTimeout(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseAskTimeout(%q) error %v, want one saying %q", in, err, msg)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for status, want := range map[string]int{"submitted": 0, "expired": 2, "cancelled": 3, "pending": 1, "": 1} {
		if got := exitCodeFor(status); got != want {
			t.Errorf("exitCodeFor(%q) = %d, want %d", status, got, want)
		}
	}
	if exitWith(0) != nil || exitWith(1) != errAskFailed {
		t.Error("exitWith(0) must be nil and exitWith(1) the plain failure")
	}
	// Caddy's Main exits with the status carried by this error type.
	for _, code := range []int{2, 3} {
		if err := exitWith(code); err == nil || err.Error() != "exiting with status "+string(rune('0'+code)) {
			t.Errorf("exitWith(%d) = %v", code, err)
		}
	}
}

// fakeServer is the REST API and the owner's WebSocket, enough to drive
// the command; the real server is exercised in e2e/ask_test.go.
type fakeServer struct {
	t  *testing.T
	mu sync.Mutex
	// what the command sent
	creates []map[string]any
	auths   []string
	cancels int
	// behaviour
	status        string
	cancelStatus  int    // the answer to POST …/cancel
	afterCancel   string // the session's status after it
	rejectPageOpt bool   // 400 for theme/lang, as a server without them
	changed       chan struct{}
	wsConnected   chan struct{}
	srv           *httptest.Server
}

func newFakeServer(t *testing.T) *fakeServer {
	f := &fakeServer{t: t, status: "pending", cancelStatus: 200, afterCancel: "cancelled", changed: make(chan struct{}), wsConnected: make(chan struct{}, 10)}
	mux := http.NewServeMux()
	id := "123e4567-e89b-12d3-a456-426614174000"
	mux.HandleFunc("POST /api/feedback/create", func(w http.ResponseWriter, r *http.Request) {
		f.seen(r)
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("create body: %v", err)
		}
		f.mu.Lock()
		f.creates = append(f.creates, body)
		f.mu.Unlock()
		if _, ok := body["message"]; !ok {
			writeErr(w, 400, "invalid_request", "message is required")
			return
		}
		if f.rejectPageOpt {
			for _, k := range []string{"theme", "lang"} {
				if _, ok := body[k]; ok {
					writeErr(w, 400, "invalid_request", `unknown field "`+k+`"; allowed fields are message, …`)
					return
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"sessionId": id, "feedbackUrl": "http://" + r.Host + "/feedback/" + id + "#t=CAPTOKEN", "status": "pending",
			"expiresAt": time.Now().Add(time.Minute).UTC(), "timeout": 60,
		})
	})
	mux.HandleFunc("GET /api/feedback/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		f.seen(r)
		_ = json.NewEncoder(w).Encode(map[string]any{"sessionId": id, "status": f.getStatus(), "expiresAt": time.Now().Add(time.Minute).UTC()})
	})
	mux.HandleFunc("GET /api/feedback/{id}/result", func(w http.ResponseWriter, r *http.Request) {
		f.seen(r)
		st := f.getStatus()
		var res any
		if st == "submitted" {
			res = map[string]any{"selectedOptions": []string{"yes"}, "freeText": "", "submittedAt": "2026-01-01T00:00:00Z"}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"sessionId": id, "status": st, "result": res})
	})
	mux.HandleFunc("POST /api/feedback/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		f.seen(r)
		f.mu.Lock()
		f.cancels++
		code := f.cancelStatus
		f.status = f.afterCancel
		f.mu.Unlock()
		switch code {
		case 200:
			_ = json.NewEncoder(w).Encode(map[string]any{"sessionId": id, "status": "cancelled"})
		case 409:
			writeErr(w, 409, "already_submitted", "the question was already answered")
		case 410:
			writeErr(w, 410, "expired", "the question expired")
		default:
			writeErr(w, code, "oops", "no")
		}
	})
	mux.HandleFunc("GET /ws/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || r.URL.Query().Get("clientType") != "app" {
			writeErr(w, 401, "unauthorized", "no token")
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"connection_established","data":{"status":"pending"}}`))
		f.wsConnected <- struct{}{}
		select {
		case <-f.changed:
			_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"session_status_changed","data":{"status":"submitted"}}`))
			_ = c.Close(websocket.StatusNormalClosure, "session submitted")
		case <-r.Context().Done():
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func writeErr(w http.ResponseWriter, code int, c, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": c, "message": msg}})
}

func (f *fakeServer) seen(r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auths = append(f.auths, r.Header.Get("Authorization"))
}

func (f *fakeServer) getStatus() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeServer) setStatus(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = s
}

func (f *fakeServer) lastCreate() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.creates) == 0 {
		f.t.Fatal("no create request")
	}
	return f.creates[len(f.creates)-1]
}

// runCommand runs `ask args…` in process, as `caddy mcp-feedback ask`.
func runCommand(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	c := askCommand()
	var out, errb bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&errb)
	c.SetIn(strings.NewReader("from stdin\n"))
	c.SetArgs(args)
	err = c.Execute()
	return out.String(), errb.String(), err
}

func TestAskFlagsMakeTheCreateBody(t *testing.T) {
	f := newFakeServer(t)
	t.Setenv("JWT_SECRET", "")
	t.Setenv("FEEDBACK_TOKEN", "env-token")
	t.Setenv("FEEDBACK_URL", f.srv.URL+"/")

	// Defaults: only the message; the server's defaults stand.
	out, errOut, err := runCommand(t, "Ship it?", "--wait=false")
	if err != nil {
		t.Fatalf("ask --wait=false: %v\n%s", err, errOut)
	}
	body := f.lastCreate()
	if len(body) != 1 || body["message"] != "Ship it?" {
		t.Errorf("default create body %v, want the message alone", body)
	}
	var cr map[string]any
	if json.Unmarshal([]byte(out), &cr) != nil || cr["sessionId"] == nil || !strings.HasSuffix(out, "}\n") {
		t.Errorf("--wait=false stdout %q, want the create response", out)
	}
	if !strings.Contains(errOut, "Answer at: http://") || strings.Contains(errOut, "█") {
		t.Errorf("stderr %q: want the link and no QR code (not a terminal)", errOut)
	}
	if got := f.auths[len(f.auths)-1]; got != "Bearer env-token" {
		t.Errorf("Authorization %q, want FEEDBACK_TOKEN's", got)
	}

	// Every flag.
	_, errOut, err = runCommand(t, "-", "--wait=false", "--url", f.srv.URL, "--token", "flag-token",
		"--option", "yes", "--option", "no, later", "--multi", "--free-text=false", "--timeout", "2m",
		"--theme", "dark", "--lang", "zh", "--metadata", `{"pr": 42}`, "--qr")
	if err != nil {
		t.Fatalf("ask with every flag: %v\n%s", err, errOut)
	}
	b, _ := json.Marshal(f.lastCreate())
	if want := `{"allowFreeText":false,"lang":"zh","message":"from stdin","metadata":{"pr":42},"multiSelect":true,"predefinedOptions":["yes","no, later"],"theme":"dark","timeout":120}`; string(b) != want {
		t.Errorf("create body\n got %s\nwant %s", b, want)
	}
	if !strings.Contains(errOut, "█") {
		t.Errorf("--qr printed no QR code:\n%s", errOut)
	}
	if got := f.auths[len(f.auths)-1]; got != "Bearer flag-token" {
		t.Errorf("Authorization %q, want --token's", got)
	}

	// Bad flags are refused before anything is sent.
	n := len(f.creates)
	for _, args := range [][]string{
		{"q", "--timeout", "1.5s"},
		{"q", "--metadata", "[1]"},
		{"q", "--url", "localhost:8080"},
		{"   "},
	} {
		_, errOut, err := runCommand(t, args...)
		if err != errAskFailed || !strings.HasPrefix(errOut, "caddy mcp-feedback ask: ") {
			t.Errorf("%v: err %v, stderr %q", args, err, errOut)
		}
	}
	if len(f.creates) != n {
		t.Error("a refused flag still sent a create")
	}
}

func TestAskTokenSources(t *testing.T) {
	f := newFakeServer(t)
	t.Setenv("FEEDBACK_TOKEN", "")
	t.Setenv("JWT_SECRET", "")
	if _, errOut, err := runCommand(t, "q", "--url", f.srv.URL); err != errAskFailed || !strings.Contains(errOut, "no token") || !strings.Contains(errOut, "JWT_SECRET") {
		t.Errorf("without any token: %v %q", err, errOut)
	}
	t.Setenv("JWT_SECRET", askSecret)
	if _, errOut, err := runCommand(t, "q", "--url", f.srv.URL, "--wait=false", "--sub", "deploy-bot"); err != nil {
		t.Fatalf("minting: %v %s", err, errOut)
	}
	tok := strings.TrimPrefix(f.auths[len(f.auths)-1], "Bearer ")
	var claims struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return []byte(askSecret), nil }, jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if claims.Subject != "deploy-bot" || claims.Scope != "feedback:create feedback:read" || time.Until(claims.ExpiresAt.Time) > 16*time.Minute {
		t.Errorf("minted claims %+v", claims)
	}
}

func newTestAsker(t *testing.T, f *fakeServer, mod func(*askConfig)) (*asker, *bytes.Buffer, *syncBuf) {
	t.Helper()
	cfg := askConfig{URL: f.srv.URL, Token: "tok", Message: "q?", Wait: true, QR: "off", Poll: 20 * time.Millisecond, NoWS: true}
	if mod != nil {
		mod(&cfg)
	}
	var out bytes.Buffer
	errb := &syncBuf{}
	a, err := newAsker(cfg, &out, errb, false)
	if err != nil {
		t.Fatal(err)
	}
	return a, &out, errb
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runAsync runs a in the background; the channel yields its exit status.
func runAsync(a *asker, sig chan os.Signal) <-chan int {
	done := make(chan int, 1)
	go func() { done <- a.run(context.Background(), sig) }()
	return done
}

func waitExit(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("ask did not finish")
		return -1
	}
}

func TestAskWaitsByPolling(t *testing.T) {
	f := newFakeServer(t)
	a, out, errb := newTestAsker(t, f, nil)
	done := runAsync(a, make(chan os.Signal, 1))
	if !eventuallyTrue(func() bool { return strings.Contains(errb.String(), "Waiting for the answer") }) {
		t.Fatalf("no countdown: %q", errb.String())
	}
	f.setStatus("submitted")
	if code := waitExit(t, done); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	if !strings.Contains(out.String(), `"status":"submitted"`) || !strings.Contains(out.String(), `"selectedOptions":["yes"]`) {
		t.Errorf("stdout %q, want the result", out.String())
	}
	if strings.Contains(errb.String(), "\r") {
		t.Error("carriage returns on a stderr that is not a terminal")
	}

	f.setStatus("expired")
	a, _, errb = newTestAsker(t, f, nil)
	if code := a.run(context.Background(), make(chan os.Signal)); code != exitExpired || !strings.Contains(errb.String(), "expired") {
		t.Errorf("expired: exit %d, %q", code, errb.String())
	}
}

// TestAskWaitsOnTheWebSocket: with polling made useless (an hour apart),
// the answer still arrives at once because the socket says so.
func TestAskWaitsOnTheWebSocket(t *testing.T) {
	f := newFakeServer(t)
	a, out, errb := newTestAsker(t, f, func(c *askConfig) { c.NoWS = false; c.Poll = time.Hour })
	done := runAsync(a, make(chan os.Signal, 1))
	select {
	case <-f.wsConnected:
	case <-time.After(10 * time.Second):
		t.Fatalf("no WebSocket connection: %s", errb.String())
	}
	start := time.Now()
	f.setStatus("submitted")
	close(f.changed)
	if code := waitExit(t, done); code != 0 || !strings.Contains(out.String(), `"submitted"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the answer took %v to arrive", d)
	}
}

func TestAskInterrupt(t *testing.T) {
	for _, c := range []struct {
		name        string
		cancel      int    // the server's answer to the cancel
		afterCancel string // the session's state then
		wantCode    int
	}{
		{"withdrawn", 200, "cancelled", exitCancelled},
		{"answered first", 409, "submitted", exitAnswered},
		{"expired first", 410, "expired", exitExpired},
		{"server error", 500, "pending", exitError},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeServer(t)
			f.cancelStatus, f.afterCancel = c.cancel, c.afterCancel
			a, out, errb := newTestAsker(t, f, nil)
			sig := make(chan os.Signal, 2)
			done := runAsync(a, sig)
			if !eventuallyTrue(func() bool { return strings.Contains(errb.String(), "Waiting for the answer") }) {
				t.Fatalf("never waited: %q", errb.String())
			}
			sig <- syscall.SIGINT
			if code := waitExit(t, done); code != c.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, c.wantCode, errb.String())
			}
			if f.cancels != 1 {
				t.Errorf("%d cancel requests, want 1", f.cancels)
			}
			if c.wantCode != exitError && !strings.Contains(out.String(), `"status":"`+c.afterCancel+`"`) {
				t.Errorf("stdout %q, want the %s result", out.String(), c.afterCancel)
			}
			if c.wantCode == exitError && !strings.Contains(errb.String(), "could not be withdrawn") {
				t.Errorf("stderr %q", errb.String())
			}
		})
	}
}

func TestAskServerErrorsAreClear(t *testing.T) {
	f := newFakeServer(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeErr(w, 401, "unauthorized", "the token has expired; mint a new one")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	a, _, errb := newTestAsker(t, f, func(c *askConfig) { c.URL = srv.URL })
	if code := a.run(context.Background(), make(chan os.Signal)); code != exitError {
		t.Errorf("exit %d", code)
	}
	if want := "caddy mcp-feedback ask: the question could not be asked: 401 Unauthorized (unauthorized): the token has expired; mint a new one\n"; errb.String() != want {
		t.Errorf("stderr\n got %q\nwant %q", errb.String(), want)
	}

	srv.Close()
	a, _, errb = newTestAsker(t, f, func(c *askConfig) { c.URL = srv.URL })
	if code := a.run(context.Background(), make(chan os.Signal)); code != exitError || !strings.Contains(errb.String(), "connect: connection refused") {
		t.Errorf("server down: exit %d, %q", code, errb.String())
	}
}

// TestAskPageOptionsFallback: a server that does not take theme/lang in the
// create body gets the question without them, and the link carries them
// in its query, where the answer page reads them.
func TestAskPageOptionsFallback(t *testing.T) {
	f := newFakeServer(t)
	f.rejectPageOpt = true
	a, out, errb := newTestAsker(t, f, func(c *askConfig) { c.Wait = false; c.Theme = "dark"; c.Lang = "zh" })
	if code := a.run(context.Background(), make(chan os.Signal)); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if len(f.creates) != 2 || f.creates[1]["theme"] != nil {
		t.Errorf("creates %v", f.creates)
	}
	if !strings.Contains(errb.String(), "?lang=zh&theme=dark#t=CAPTOKEN") {
		t.Errorf("link in %q lacks the query", errb.String())
	}
	if !strings.Contains(out.String(), `"sessionId"`) {
		t.Errorf("stdout %q", out.String())
	}
}

// TestWriteQR reads the half-block drawing back into modules and compares
// them with the QR code of the link.
func TestWriteQR(t *testing.T) {
	link := "http://192.168.1.20:8080/feedback/123e4567-e89b-12d3-a456-426614174000#t=abcdefghijklmnopqrstuvwxyz"
	var buf bytes.Buffer
	writeQR(&buf, link)
	code, err := qr.Encode(link, qr.L)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	const quiet = 2
	// dark[y][x] for every module, quiet zone included; a space is two dark
	// modules, █ two light, ▀ light over dark, ▄ dark over light.
	var dark [][]bool
	for _, line := range lines {
		top, bottom := []bool{}, []bool{}
		for _, r := range line {
			switch r {
			case ' ':
				top, bottom = append(top, true), append(bottom, true)
			case '█':
				top, bottom = append(top, false), append(bottom, false)
			case '▀':
				top, bottom = append(top, false), append(bottom, true)
			case '▄':
				top, bottom = append(top, true), append(bottom, false)
			default:
				t.Fatalf("unexpected %q in the QR drawing", r)
			}
		}
		dark = append(dark, top, bottom)
	}
	for y := 0; y < code.Size; y++ {
		for x := 0; x < code.Size; x++ {
			if dark[y+quiet][x+quiet] != code.Black(x, y) {
				t.Fatalf("module (%d,%d) drawn wrong:\n%s", x, y, buf.String())
			}
		}
	}
	for x := 0; x < code.Size+2*quiet && x < len(dark[0]); x++ {
		if dark[0][x] || dark[1][x] {
			t.Fatal("the quiet zone is not light")
		}
	}
	var long bytes.Buffer
	writeQR(&long, strings.Repeat("x", 5000))
	if long.Len() != 0 {
		t.Error("a link too long for a QR code drew something")
	}
}

func TestMintingSourceRenews(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	src := mintingSource([]byte(askSecret), TokenOptions{Subject: "a", TTL: 15 * time.Minute}, func() time.Time { return now })
	a, err := src()
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(9 * time.Minute)
	if b, _ := src(); a != b {
		t.Error("a token with 6 of its 15 minutes left was minted again")
	}
	now = now.Add(2 * time.Minute)
	if c, _ := src(); c == a {
		t.Error("a token with 4 of its 15 minutes left was not renewed")
	}
}

func eventuallyTrue(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}
