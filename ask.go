package mcpfeedback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"rsc.io/qr"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
)

// Exit codes of `caddy mcp-feedback ask`: a shell can branch on them.
const (
	exitAnswered  = 0
	exitError     = 1
	exitExpired   = 2
	exitCancelled = 3
)

// defaultAskURL is the quick start's site (Caddyfile.example).
const defaultAskURL = "http://localhost:8080"

// askConfig is what the flags and the environment say.
type askConfig struct {
	URL            string
	Token          string // a bearer token given by the user; "" to mint one
	Secret         string // JWT_SECRET, for minting
	Subject        string
	Issuer         string
	Audience       string
	Message        string
	Options        []string
	Multi          bool
	FreeText       *bool // nil: the server's default (true)
	Timeout        int64 // seconds; 0: the server's default_timeout
	Metadata       json.RawMessage
	Theme          string
	Lang           string
	Wait           bool
	QR             string // "auto" (when stderr is a terminal), "on", "off"
	Poll           time.Duration
	NoWS           bool
	RequestTimeout time.Duration
}

func askCommand() *cobra.Command {
	var (
		cfg              askConfig
		timeout          string
		metadata         string
		freeText, qrFlag bool
	)
	c := &cobra.Command{
		Use:   `ask "<question>" [--option yes --option no] [--timeout 10m] [--wait=false]`,
		Short: "Ask a person a question through a running server and wait for the answer",
		Long: `Ask a question through a running mcp_feedback server's REST API, print the
answer link (and a QR code of it) on stderr, wait for the answer, and print
the result (the body of GET /api/feedback/{id}/result) as JSON on stdout.

The question "-" is read from standard input (Markdown, up to 64 KiB).

The token is --token, else $FEEDBACK_TOKEN, else one minted here with
$JWT_SECRET (subject --sub, default the OS user name; scopes feedback:create
and feedback:read; it lives 15 minutes and is renewed while waiting).

Exit status: 0 answered, 2 expired, 3 withdrawn (Ctrl+C withdraws the
question this command asked), 1 any error. With --wait=false the create
response is printed and the status is 0.`,
		Example: `  caddy mcp-feedback ask "Deploy v2.3 to production?" --option yes --option no --timeout 10m
  caddy mcp-feedback ask --url https://fb.example.com "Anything to add?" | jq -r .result.freeText`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Errors are ours to print (plainly, on stderr); cobra would add
			// "Error:" and Caddy's logger a JSON line.
			cmd.SilenceErrors = true
			f := cmd.Flags()
			code := func() int {
				msg := args[0]
				if msg == "-" {
					b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10+1))
					if err != nil {
						return failf(cmd.ErrOrStderr(), "reading the question from stdin: %v", err)
					}
					if len(b) > 64<<10 {
						return failf(cmd.ErrOrStderr(), "the question on stdin is longer than 64 KiB")
					}
					msg = strings.TrimRight(string(b), "\r\n")
				}
				cfg.Message = msg
				if !f.Changed("url") {
					cfg.URL = envOr("FEEDBACK_URL", defaultAskURL)
				}
				if !f.Changed("token") {
					cfg.Token = os.Getenv("FEEDBACK_TOKEN")
				}
				cfg.Secret = os.Getenv("JWT_SECRET")
				if f.Changed("free-text") {
					cfg.FreeText = &freeText
				}
				switch {
				case !f.Changed("qr"):
					cfg.QR = "auto"
				case qrFlag:
					cfg.QR = "on"
				default:
					cfg.QR = "off"
				}
				if timeout != "" {
					secs, err := parseAskTimeout(timeout)
					if err != nil {
						return failf(cmd.ErrOrStderr(), "%v", err)
					}
					cfg.Timeout = secs
				}
				if metadata != "" {
					md, err := parseMetadata(metadata)
					if err != nil {
						return failf(cmd.ErrOrStderr(), "%v", err)
					}
					cfg.Metadata = md
				}
				sig := make(chan os.Signal, 2)
				signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
				defer signal.Stop(sig)
				a, err := newAsker(cfg, cmd.OutOrStdout(), cmd.ErrOrStderr(), stderrIsTerminal(cmd.ErrOrStderr()))
				if err != nil {
					return failf(cmd.ErrOrStderr(), "%v", err)
				}
				return a.run(context.Background(), sig)
			}()
			return exitWith(code)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.URL, "url", defaultAskURL, "base URL of the site serving mcp_feedback (env FEEDBACK_URL)")
	f.StringVar(&cfg.Token, "token", "", "bearer token (env FEEDBACK_TOKEN); without one, a token is minted with $JWT_SECRET")
	f.StringVar(&cfg.Subject, "sub", "", "subject of a minted token (default: the OS user name)")
	f.StringVar(&cfg.Issuer, "iss", "", "issuer of a minted token; must match jwt_issuer when that is set")
	f.StringVar(&cfg.Audience, "aud", "", "audience of a minted token; must match jwt_audience when that is set")
	f.StringArrayVar(&cfg.Options, "option", nil, "a predefined answer; repeat for more")
	f.BoolVar(&cfg.Multi, "multi", false, "let the person choose several options")
	f.BoolVar(&freeText, "free-text", true, "let the person write an answer of their own (the server's default is true)")
	f.StringVar(&timeout, "timeout", "", "how long the question waits: seconds or a duration like 10m (default: the server's default_timeout)")
	f.StringVar(&metadata, "metadata", "", `a JSON object shown with the question, e.g. '{"pr":42}'`)
	f.StringVar(&cfg.Theme, "theme", "", "answer page theme: light or dark")
	f.StringVar(&cfg.Lang, "lang", "", "answer page language: en or zh")
	f.BoolVar(&cfg.Wait, "wait", true, "wait for the answer; --wait=false prints the create response and exits")
	f.BoolVar(&qrFlag, "qr", true, "print a QR code of the link on stderr (default: only when stderr is a terminal)")
	f.DurationVar(&cfg.Poll, "poll-interval", time.Second, "how often to ask for the status while no WebSocket is connected")
	f.BoolVar(&cfg.NoWS, "no-websocket", false, "poll only; never watch over the WebSocket")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", 30*time.Second, "limit for each HTTP request")
	_ = f.MarkHidden("poll-interval")
	_ = f.MarkHidden("no-websocket")
	_ = f.MarkHidden("request-timeout")
	return c
}

// exitWith turns an exit code into what Caddy's Main turns back into it:
// nil for 0, a plain (already printed, silenced) error for 1, and Caddy's
// own exit-status error for the others.
func exitWith(code int) error {
	switch code {
	case 0:
		return nil
	case 1:
		return errAskFailed
	}
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, nil })(&cobra.Command{}, nil)
}

var errAskFailed = errors.New("mcp-feedback ask failed")

func failf(w io.Writer, format string, args ...any) int {
	fmt.Fprintf(w, "caddy mcp-feedback ask: "+format+"\n", args...)
	return exitError
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func stderrIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// parseAskTimeout reads "300" (seconds) or a Go duration ("10m", "1h30m");
// the server takes whole seconds.
func parseAskTimeout(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("--timeout must be positive, got %q", s)
		}
		return n, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--timeout %q is neither a number of seconds nor a duration like 90s or 10m", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("--timeout must be positive, got %q", s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("--timeout %q is not a whole number of seconds", s)
	}
	return int64(d / time.Second), nil
}

func parseMetadata(s string) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &obj); err != nil || obj == nil {
		return nil, fmt.Errorf(`--metadata must be a JSON object, e.g. '{"pr":42}'`)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		return nil, fmt.Errorf("--metadata: %v", err)
	}
	return buf.Bytes(), nil
}

// exitCodeFor maps a session status to the command's exit status.
func exitCodeFor(status string) int {
	switch status {
	case "submitted":
		return exitAnswered
	case "expired":
		return exitExpired
	case "cancelled":
		return exitCancelled
	}
	return exitError
}

func terminalStatus(s string) bool {
	return s == "submitted" || s == "expired" || s == "cancelled"
}

// asker is one run of the command.
type asker struct {
	cfg     askConfig
	base    string // without a trailing slash
	client  *http.Client
	stdout  io.Writer
	stderr  io.Writer
	tty     bool
	tokens  func() (string, error)
	now     func() time.Time
	lineOut bool // a countdown line is on the terminal and must be cleared
}

func newAsker(cfg askConfig, stdout, stderr io.Writer, tty bool) (*asker, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--url %q must be the site's base URL, like http://localhost:8080 or https://fb.example.com/prefix", cfg.URL)
	}
	if strings.TrimSpace(cfg.Message) == "" {
		return nil, errors.New("the question is empty")
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	a := &asker{
		cfg:    cfg,
		base:   strings.TrimRight(u.String(), "/"),
		client: &http.Client{}, // every request has its own context deadline; WebSocket dials need Timeout 0
		stdout: stdout, stderr: stderr, tty: tty,
		now: time.Now,
	}
	switch {
	case cfg.Token != "":
		tok := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(cfg.Token), "Bearer "))
		a.tokens = func() (string, error) { return tok, nil }
	case cfg.Secret != "":
		sub := cfg.Subject
		if sub == "" {
			sub = osUserName()
		}
		a.tokens = mintingSource([]byte(cfg.Secret), TokenOptions{
			Subject: sub, Issuer: cfg.Issuer, Audience: cfg.Audience,
			Scope: []string{auth.ScopeCreate, auth.ScopeRead}, TTL: 15 * time.Minute,
		}, time.Now)
		if _, err := a.tokens(); err != nil {
			return nil, fmt.Errorf("minting a token with $JWT_SECRET: %v", err)
		}
	default:
		return nil, errors.New("no token: pass --token, set FEEDBACK_TOKEN, or set JWT_SECRET to mint one (see `caddy mcp-feedback token`)")
	}
	return a, nil
}

func osUserName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	for _, k := range []string{"USER", "USERNAME", "LOGNAME"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "cli"
}

// mintingSource mints a token and mints a new one when less than a third
// of its life is left, so that a long wait never runs on an expired token.
func mintingSource(secret []byte, o TokenOptions, clock func() time.Time) func() (string, error) {
	var (
		mu     sync.Mutex
		tok    string
		expiry time.Time
	)
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		now := clock()
		if tok != "" && now.Before(expiry.Add(-o.TTL/3)) {
			return tok, nil
		}
		o.Now = now
		t, err := MintToken(secret, o)
		if err != nil {
			return "", err
		}
		tok, expiry = t, now.Add(o.TTL)
		return tok, nil
	}
}

// apiError is a non-2xx answer of the server.
type apiError struct {
	Status  int
	Code    string
	Message string
	Auth    string // WWW-Authenticate, on a 401
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Auth != "" && e.Message == "" {
		b.WriteString(": " + e.Auth)
	}
	return b.String()
}

// transient reports whether a failed request may succeed if repeated: the
// network, a 5xx, or a quota's 429.
func transient(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusRequestTimeout
	}
	return err != nil && !errors.Is(err, context.Canceled)
}

// call makes one request with its own deadline and returns the body of a
// 2xx answer, or an *apiError.
func (a *asker) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	tok, err := a.tokens()
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, a.base+path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, a.base+path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return b, nil
	}
	ae := &apiError{Status: resp.StatusCode}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
	} else if s := strings.TrimSpace(string(b)); s != "" && len(s) < 300 {
		ae.Message = s
	} else if resp.StatusCode == http.StatusNotFound {
		ae.Message = "nothing here: is --url the site that serves mcp_feedback (with its path prefix, if any)?"
	}
	if resp.StatusCode == http.StatusUnauthorized {
		ae.Auth = resp.Header.Get("WWW-Authenticate")
	}
	return nil, ae
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// createBody is POST /api/feedback/create's body; unset fields keep the
// server's defaults.
type createBody struct {
	Message           string          `json:"message"`
	PredefinedOptions []string        `json:"predefinedOptions,omitempty"`
	Timeout           int64           `json:"timeout,omitempty"`
	Metadata          json.RawMessage `json:"metadata,omitempty"`
	MultiSelect       bool            `json:"multiSelect,omitempty"`
	AllowFreeText     *bool           `json:"allowFreeText,omitempty"`
	Theme             string          `json:"theme,omitempty"`
	Lang              string          `json:"lang,omitempty"`
}

type createResp struct {
	SessionID   string    `json:"sessionId"`
	FeedbackURL string    `json:"feedbackUrl"`
	Status      string    `json:"status"`
	ExpiresAt   time.Time `json:"expiresAt"`
	// Warnings: what the server changed instead of refusing, such as a
	// --timeout outside its range, moved into it.
	Warnings []string `json:"warnings"`
}

// create asks the question. A server that does not know the page options
// theme/lang (a 400 naming them) is asked again without them, and they go
// into the link's query instead, where the answer page reads them too.
func (a *asker) create(ctx context.Context) (*createResp, []byte, error) {
	body := createBody{
		Message: a.cfg.Message, PredefinedOptions: a.cfg.Options, Timeout: a.cfg.Timeout,
		Metadata: a.cfg.Metadata, MultiSelect: a.cfg.Multi, AllowFreeText: a.cfg.FreeText,
		Theme: a.cfg.Theme, Lang: a.cfg.Lang,
	}
	b, _ := json.Marshal(body)
	raw, err := a.call(ctx, http.MethodPost, "/api/feedback/create", b)
	inQuery := false
	if ae := (*apiError)(nil); errors.As(err, &ae) && ae.Status == http.StatusBadRequest && (body.Theme != "" || body.Lang != "") &&
		(strings.Contains(ae.Message, `unknown field "theme"`) || strings.Contains(ae.Message, `unknown field "lang"`)) {
		body.Theme, body.Lang = "", ""
		b, _ = json.Marshal(body)
		raw, err = a.call(ctx, http.MethodPost, "/api/feedback/create", b)
		inQuery = true
	}
	if err != nil {
		return nil, nil, err
	}
	var cr createResp
	if err := json.Unmarshal(raw, &cr); err != nil || cr.SessionID == "" || cr.FeedbackURL == "" {
		return nil, nil, fmt.Errorf("the server's create response is not what this command expects: %.200s", raw)
	}
	if inQuery {
		cr.FeedbackURL = withPageQuery(cr.FeedbackURL, a.cfg.Theme, a.cfg.Lang)
	}
	return &cr, raw, nil
}

// withPageQuery puts theme and lang in the link's query, before the
// fragment that holds the capability token.
func withPageQuery(link, theme, lang string) string {
	u, err := url.Parse(link)
	if err != nil {
		return link
	}
	q := u.Query()
	if theme != "" {
		q.Set("theme", theme)
	}
	if lang != "" {
		q.Set("lang", lang)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

type statusResp struct {
	Status    string    `json:"status"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (a *asker) status(ctx context.Context, id string) (*statusResp, error) {
	raw, err := a.call(ctx, http.MethodGet, "/api/feedback/"+url.PathEscape(id)+"/status", nil)
	if err != nil {
		return nil, err
	}
	var st statusResp
	if err := json.Unmarshal(raw, &st); err != nil || st.Status == "" {
		return nil, fmt.Errorf("the server's status response is not what this command expects: %.200s", raw)
	}
	return &st, nil
}

// result fetches GET …/result, repeating transient failures for a while.
func (a *asker) result(ctx context.Context, id string) (string, []byte, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		raw, err := a.call(ctx, http.MethodGet, "/api/feedback/"+url.PathEscape(id)+"/result", nil)
		if err == nil {
			var r struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(raw, &r); err != nil || r.Status == "" {
				return "", nil, fmt.Errorf("the server's result response is not what this command expects: %.200s", raw)
			}
			return r.Status, raw, nil
		}
		lastErr = err
		if !transient(err) {
			break
		}
	}
	return "", nil, lastErr
}

// run is the whole command; it returns the exit status.
func (a *asker) run(ctx context.Context, sig <-chan os.Signal) int {
	// A Ctrl+C while the create is in flight is held until it returns, so
	// that the question it made can be withdrawn; a second one gives up.
	cctx, ccancel := context.WithCancel(ctx)
	var (
		signals int
		wg      sync.WaitGroup
	)
	done := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-sig:
				if signals++; signals >= 2 {
					ccancel()
				}
			case <-done:
				return
			}
		}
	})
	cr, raw, err := a.create(cctx)
	close(done)
	wg.Wait()
	ccancel()
	switch {
	case err != nil && signals >= 2:
		return a.fail("interrupted while asking; if the server got the question, it stays open until it expires")
	case err != nil:
		return a.fail("the question could not be asked: %v", err)
	case signals > 0:
		return a.withdraw(ctx, cr.SessionID, sig)
	}
	for _, w := range cr.Warnings {
		fmt.Fprintln(a.stderr, "Note from the server: "+w)
	}
	a.showLink(cr.FeedbackURL)
	if !a.cfg.Wait {
		a.printJSON(raw)
		return exitAnswered
	}
	status, err := a.wait(ctx, cr.SessionID, cr.ExpiresAt, sig)
	a.clearLine()
	switch {
	case errors.Is(err, errInterrupted):
		return a.withdraw(ctx, cr.SessionID, sig)
	case err != nil:
		return a.fail("%v", err)
	}
	return a.finish(ctx, cr.SessionID, status)
}

var errInterrupted = errors.New("interrupted")

// finish prints the result of a closed session and maps it to the exit status.
func (a *asker) finish(ctx context.Context, id, status string) int {
	st, raw, err := a.result(ctx, id)
	if err != nil {
		return a.fail("the question is %s, but its result could not be read: %v", status, err)
	}
	a.printJSON(raw)
	switch st {
	case "submitted":
		fmt.Fprintln(a.stderr, "Answered.")
	case "expired":
		fmt.Fprintln(a.stderr, "The question expired without an answer.")
	case "cancelled":
		fmt.Fprintln(a.stderr, "The question was withdrawn.")
	default:
		return a.fail("unexpected status %q", st)
	}
	return exitCodeFor(st)
}

// withdraw cancels the question after Ctrl+C (POST …/cancel): 3 when it is
// withdrawn; an answer that got there first wins (0), as does expiry (2).
// A second Ctrl+C stops trying.
func (a *asker) withdraw(ctx context.Context, id string, sig <-chan os.Signal) int {
	a.clearLine()
	fmt.Fprintln(a.stderr, "Withdrawing the question…")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sig:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := a.call(ctx, http.MethodPost, "/api/feedback/"+url.PathEscape(id)+"/cancel", nil)
	var ae *apiError
	switch {
	case err == nil:
		return a.finish(ctx, id, "cancelled")
	case errors.As(err, &ae) && ae.Status == http.StatusConflict:
		fmt.Fprintln(a.stderr, "Too late to withdraw: the question was already answered.")
		return a.finish(ctx, id, "submitted")
	case errors.As(err, &ae) && ae.Status == http.StatusGone:
		return a.finish(ctx, id, "expired")
	case errors.Is(err, context.Canceled):
		return a.fail("interrupted again: the question %s was not withdrawn and stays open until it expires", id)
	}
	return a.fail("the question %s could not be withdrawn (it stays open until it expires): %v", id, err)
}

func (a *asker) fail(format string, args ...any) int {
	a.clearLine()
	return failf(a.stderr, format, args...)
}

func (a *asker) printJSON(raw []byte) {
	raw = bytes.TrimRight(raw, "\n")
	_, _ = a.stdout.Write(append(raw, '\n'))
}

// showLink prints the answer link and, on a terminal (or with --qr), a QR
// code of it for a phone's camera.
func (a *asker) showLink(link string) {
	fmt.Fprintf(a.stderr, "Answer at: %s\n", link)
	if a.cfg.QR == "on" || (a.cfg.QR == "auto" && a.tty) {
		writeQR(a.stderr, link)
	}
}

// writeQR draws link as a QR code with half blocks (two modules per text
// row), light modules as full blocks, as terminals show it best.
func writeQR(w io.Writer, link string) {
	if _, err := qr.Encode(link, qr.L); err != nil {
		// Too long for a QR code: the link above is enough.
		return
	}
	qrterminal.GenerateWithConfig(link, qrterminal.Config{
		Level:          qrterminal.L,
		Writer:         w,
		HalfBlocks:     true,
		BlackChar:      qrterminal.BLACK_BLACK,
		WhiteBlackChar: qrterminal.WHITE_BLACK,
		WhiteChar:      qrterminal.WHITE_WHITE,
		BlackWhiteChar: qrterminal.BLACK_WHITE,
		QuietZone:      2,
	})
}

// progress shows the time left: on a terminal one line rewritten in place
// every second; elsewhere (CI logs) a line at most every 30 seconds.
type progress struct {
	a         *asker
	expiresAt time.Time
	lastPrint time.Time
}

func (p *progress) show(force bool) {
	a := p.a
	now := a.now()
	left := max(p.expiresAt.Sub(now), 0)
	text := "Waiting for the answer: " + formatLeft(left) + " left"
	if left == 0 {
		text = "Waiting for the answer: time is up, checking…"
	}
	if a.tty {
		fmt.Fprintf(a.stderr, "\r%s\x1b[K", text)
		a.lineOut = true
		return
	}
	if force || now.Sub(p.lastPrint) >= 30*time.Second {
		fmt.Fprintln(a.stderr, text)
		p.lastPrint = now
	}
}

func (a *asker) clearLine() {
	if a.lineOut {
		fmt.Fprint(a.stderr, "\r\x1b[K")
		a.lineOut = false
	}
}

func formatLeft(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d h %02d min", s/3600, (s%3600)/60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// wait returns the session's status once it is closed. It asks for the
// status whenever the WebSocket says something changed, and every poll
// interval while no WebSocket is connected (then every 15 s as a safety
// net). The status endpoint is the source of truth; the socket only
// makes the answer arrive at once.
func (a *asker) wait(ctx context.Context, id string, expiresAt time.Time, sig <-chan os.Signal) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wake := make(chan struct{}, 1)
	var live atomic.Bool
	if !a.cfg.NoWS {
		go a.watch(ctx, id, wake, &live)
	}
	prog := &progress{a: a, expiresAt: expiresAt}
	prog.show(true)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	var (
		failingSince time.Time
		warned       bool
	)
	for {
		select {
		case <-sig:
			return "", errInterrupted
		case <-tick.C:
			prog.show(false)
			continue
		case <-wake:
		case <-poll.C:
		}
		st, err := a.status(ctx, id)
		switch {
		case err == nil:
			if warned {
				a.clearLine()
				fmt.Fprintln(a.stderr, "The server answers again.")
				warned = false
			}
			failingSince = time.Time{}
			if !st.ExpiresAt.IsZero() {
				prog.expiresAt = st.ExpiresAt
			}
			if terminalStatus(st.Status) {
				return st.Status, nil
			}
		case transient(err):
			// The server or the network is away for now; the question
			// lives on the server, so keep asking until well past its
			// deadline.
			if failingSince.IsZero() {
				failingSince = a.now()
			}
			if !warned {
				a.clearLine()
				fmt.Fprintf(a.stderr, "The server cannot be reached (%v); still trying.\n", err)
				warned = true
			}
			if a.now().After(prog.expiresAt.Add(time.Minute)) && a.now().Sub(failingSince) > time.Minute {
				return "", fmt.Errorf("the server has not answered for %s and the question's deadline has passed: %v", a.now().Sub(failingSince).Round(time.Second), err)
			}
		default:
			return "", fmt.Errorf("reading the question's status: %v", err)
		}
		interval := a.cfg.Poll
		if live.Load() && err == nil {
			interval = 15 * time.Second
		}
		// Look again just after the deadline: the server records the
		// expiry when it is asked (and the socket says so too).
		if until := prog.expiresAt.Sub(a.now()); until > 0 && until+100*time.Millisecond < interval {
			interval = until + 100*time.Millisecond
		}
		poll.Reset(interval)
	}
}

// watch follows /ws/{id} as the owner (Authorization on the handshake) and
// nudges wake on every message and every close, reconnecting with backoff.
// It gives up for good on a refused handshake (polling covers the wait).
func (a *asker) watch(ctx context.Context, id string, wake chan<- struct{}, live *atomic.Bool) {
	nudge := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	u := a.base + "/ws/" + url.PathEscape(id) + "?clientType=app"
	backoff := time.Second
	for ctx.Err() == nil {
		code, refused := a.watchOnce(ctx, u, nudge, live)
		live.Store(false)
		nudge()
		if refused || code == websocket.StatusNormalClosure || code == websocket.StatusPolicyViolation || ctx.Err() != nil {
			return
		}
		delay := backoff
		if code == websocket.StatusServiceRestart || code == websocket.StatusGoingAway {
			delay = 200 * time.Millisecond
		} else {
			backoff = min(backoff*2, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// watchOnce holds one connection until it closes; refused is true when the
// server answered the handshake with a 4xx.
func (a *asker) watchOnce(ctx context.Context, u string, nudge func(), live *atomic.Bool) (code websocket.StatusCode, refused bool) {
	tok, err := a.tokens()
	if err != nil {
		return -1, true
	}
	dctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	c, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: a.client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}},
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return -1, true
		}
		return -1, false
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err), false
		}
		live.Store(true)
		nudge()
	}
}
