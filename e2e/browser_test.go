package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The answer page in Debian's headless Chromium against the real Caddy
// binary. Screenshots go to test-output/screenshots/ and axe-core results to
// test-output/axe/ (both ignored by git); look at them.

var (
	outDir    = filepath.Join("..", "test-output")
	axeOnce   sync.Once
	axeSource string
	axeErr    error
)

// chromium is Debian's browser: `make deps` installs it. A missing one is a
// broken setup, not a reason to skip.
func chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("chromium is not installed: run `make deps` (it runs apt-get install chromium)")
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile; it is ended
// (process and profile) when the test ends.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	// The first action starts the browser and binds it to ctx, which has no
	// deadline; each later step has its own.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

type device struct {
	name          string
	width, height int64
	mobile        bool
}

var (
	phone   = device{"phone", 375, 812, true}
	desktop = device{"desktop", 1280, 800, false}
)

// newTab opens a tab of the browser in ctx, sized like d. Script in
// xssProbe runs in every document before the page's own.
func newTab(t testing.TB, browser context.Context, d device) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first action on a context opens its tab and ties the tab's life
	// to the context it is given: give it one without a deadline.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	opts := []chromedp.EmulateViewportOption{}
	if d.mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	step(t, tab, "set viewport", chromedp.EmulateViewport(d.width, d.height, opts...))
	if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: xssProbe}); err != nil {
		t.Fatal(err)
	}
	return tab
}

// xssProbe records anything an injected script could do that a test can
// see: dialogs, the __xss flag, and CSP violations (a blocked script means
// the sanitiser let one through).
const xssProbe = `
window.__xss = 0;
window.__csp = [];
window.alert = window.confirm = window.prompt = function () { window.__xss = 1; };
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.effectiveDirective + ' ' + e.blockedURI);
});`

// step runs actions with a deadline and fails the test with what was being done.
func step(t testing.TB, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t testing.TB, tab context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %.80s: %v", expr, err)
	}
	return v
}

// waitFor polls a page expression until it is true (bounded), e.g. until
// the page shows a state: the page changes it on events, not on a timer.
func waitFor(t testing.TB, tab context.Context, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	// An exception is "not yet", not a failure: the predicate may run while
	// the page is still being replaced (Navigate can return before the new
	// document has its elements), and chromedp's Poll gives up at the first
	// exception.
	guarded := "(function () { try { return !!(" + expr + "); } catch (e) { return false; } })()"
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](guarded, chromedp.WithPollingTimeout(25*time.Second))); err != nil {
		state, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.getElementById('main').dataset.state + ' / ' + document.getElementById('conn').textContent`))
		t.Fatalf("waiting for %s (%s): %v; page state %q", what, expr, err, state)
	}
}

func waitState(t testing.TB, tab context.Context, state string) {
	t.Helper()
	waitFor(t, tab, "state "+state, `document.getElementById('main').dataset.state === '`+state+`'`)
}

func screenshot(t testing.TB, tab context.Context, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	// Phones: the screen as the person sees it (the send button stays at
	// the bottom of it); desktops: the whole page.
	shot := chromedp.FullScreenshot(100)
	if strings.Contains(name, "phone") {
		shot = chromedp.CaptureScreenshot()
	}
	buf, err := chromedp.Run(ctx, shot)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join(outDir, "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

type axeViolation struct {
	ID      string   `json:"id"`
	Impact  string   `json:"impact"`
	Help    string   `json:"help"`
	Targets []string `json:"targets"`
}

// checkAxe injects axe-core (npm, installed by `make deps`) and fails on
// any serious or critical violation; all results are saved.
func checkAxe(t testing.TB, tab context.Context, name string) {
	t.Helper()
	vs := runAxe(t, tab, name)
	var minor []string
	for _, v := range vs {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("axe %s: %s violation %s (%s) at %v", name, v.Impact, v.ID, v.Help, v.Targets)
		} else {
			minor = append(minor, v.ID+"/"+v.Impact)
		}
	}
	t.Logf("axe %s: %d serious/critical, other: %v", name, len(vs)-len(minor), minor)
}

func runAxe(t testing.TB, tab context.Context, name string) []axeViolation {
	t.Helper()
	axeOnce.Do(func() {
		var b []byte
		b, axeErr = os.ReadFile(filepath.Join("browserjs", "node_modules", "axe-core", "axe.min.js"))
		axeSource = string(b)
	})
	if axeErr != nil {
		t.Fatalf("axe-core is not installed (run `make deps`, which runs npm ci in e2e/browserjs): %v", axeErr)
	}
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](axeSource)); err != nil {
		t.Fatalf("injecting axe-core: %v", err)
	}
	res, err := chromedp.Run(ctx, chromedp.Evaluate[string](`axe.run(document, {resultTypes: ['violations']}).then(function (r) {
		return JSON.stringify(r.violations.map(function (v) {
			return {id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 5).map(function (n) { return n.target.join(' '); })};
		}));
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("running axe-core: %v", err)
	}
	var vs []axeViolation
	if err := json.Unmarshal([]byte(res), &vs); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(outDir, "axe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), []byte(res), 0o644); err != nil {
		t.Fatal(err)
	}
	return vs
}

// noXSS checks that nothing injected ran.
func noXSS(t testing.TB, tab context.Context, where string) {
	t.Helper()
	if v := eval[int](t, tab, `window.__xss`); v != 0 {
		t.Errorf("%s: injected script ran (window.__xss = %d)", where, v)
	}
	for _, v := range eval[[]string](t, tab, `window.__csp`) {
		if !strings.HasPrefix(v, "img-src ") {
			t.Errorf("%s: CSP had to block %q: something unsafe reached the page", where, v)
		}
	}
}

func pageURL(base, id, query, capTok string) string {
	u := base + "/feedback/" + id
	if query != "" {
		u += "?" + query
	}
	if capTok != "" {
		u += "#t=" + capTok
	}
	return u
}

// TestAnswerPageVariants: dark/light × zh/en × phone/desktop. Each variant
// answers in one tab (touch on phones, keyboard on desktops) while a second
// tab watches the answer arrive over the WebSocket.
func TestAnswerPageVariants(t *testing.T) {
	c := startCaddy(t, memorySites)
	browser := newBrowser(t)
	alice := token(t, "alice")
	strings_ := map[string]struct{ submit, given string }{
		"en": {"Send answer", "Your choice"},
		"zh": {"发送回答", "你的选择"},
	}
	bg := map[string]string{"dark": "rgb(17, 19, 23)", "light": "rgb(246, 247, 249)"}
	for _, theme := range []string{"light", "dark"} {
		for _, lang := range []string{"en", "zh"} {
			for _, d := range []device{phone, desktop} {
				name := theme + "-" + lang + "-" + d.name
				t.Run(name, func(t *testing.T) {
					multi := d == desktop
					body := fmt.Sprintf(`{"message":"Deploy **v2.3** to production?\n\n- 3 migrations\n- [changelog](https://example.com/changes)\n\n部署前请确认。",`+
						`"predefinedOptions":["Yes, deploy now","Wait until tomorrow","No — roll back"],"multiSelect":%t,"allowFreeText":true,`+
						`"metadata":{"repo":"acme/api","branch":"main","tests":{"passed":412,"failed":0}},"timeout":900}`, multi)
					cr, capTok := createSession(t, c.Client, c.HTTP, alice, body)
					url := pageURL(c.HTTP, cr.SessionID, "theme="+theme+"&lang="+lang, capTok)

					tab := newTab(t, browser, d)
					step(t, tab, "open page", chromedp.Navigate(url))
					waitState(t, tab, "pending")
					waitFor(t, tab, "options", `document.querySelectorAll('#options input').length === 3`)
					if got := eval[string](t, tab, `document.getElementById('submit').textContent`); got != strings_[lang].submit {
						t.Errorf("submit button %q, want %q", got, strings_[lang].submit)
					}
					if got := eval[string](t, tab, `getComputedStyle(document.body).backgroundColor`); got != bg[theme] {
						t.Errorf("background %s, want %s for %s", got, bg[theme], theme)
					}
					wantType := "radio"
					if multi {
						wantType = "checkbox"
					}
					if got := eval[string](t, tab, `document.getElementById('option-0').type`); got != wantType {
						t.Errorf("options are %s, want %s", got, wantType)
					}
					waitFor(t, tab, "countdown", `/\d+:\d\d/.test(document.getElementById('countdown').textContent)`)
					screenshot(t, tab, name+"-pending")
					checkAxe(t, tab, name+"-pending")

					watcher := newTab(t, browser, d)
					step(t, watcher, "open second tab", chromedp.Navigate(url))
					waitState(t, watcher, "pending")
					waitFor(t, watcher, "live connection", `document.getElementById('main').dataset.connects === '1'`)

					var wantOptions []string
					if multi {
						// Keyboard only: Enter toggles an option, Tab walks the
						// form in order, Ctrl+Enter sends.
						step(t, tab, "keyboard answer",
							chromedp.Focus(chromedp.ID("option-0")), chromedp.KeyEvent(kb.Enter),
							chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Enter))
						if got := eval[string](t, tab, `document.activeElement.id`); got != "option-1" {
							t.Fatalf("after Tab the focus is on %q, want option-1", got)
						}
						step(t, tab, "tab to the text box", chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab))
						if got := eval[string](t, tab, `document.activeElement.id`); got != "freetext" {
							t.Fatalf("after two more Tabs the focus is on %q, want freetext", got)
						}
						if got := eval[string](t, tab, `document.getElementById('main').dataset.state`); got != "pending" {
							t.Fatalf("Enter on an option sent the answer (state %s)", got)
						}
						step(t, tab, "type and send", chromedp.KeyEvent("typed on "+name),
							chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
						wantOptions = []string{"Yes, deploy now", "Wait until tomorrow"}
					} else {
						// Touch: Enter on a radio selects it without sending;
						// a tap picks another; a double tap on send is one answer.
						step(t, tab, "enter on option", chromedp.Focus(chromedp.ID("option-0")), chromedp.KeyEvent(kb.Enter))
						if !eval[bool](t, tab, `document.getElementById('option-0').checked && document.getElementById('main').dataset.state === 'pending'`) {
							t.Fatal("Enter on a radio did not select it, or sent the answer")
						}
						step(t, tab, "tap and type",
							chromedp.Tap(chromedp.CSS(`#options label:nth-child(2)`)),
							chromedp.SendKeys(chromedp.ID("freetext"), "typed on "+name))
						step(t, tab, "double tap send", chromedp.DoubleClick(chromedp.ID("submit")))
						wantOptions = []string{"Wait until tomorrow"}
					}
					waitState(t, tab, "submitted")
					if got := eval[string](t, tab, `document.getElementById('given-options').textContent`); got != strings.Join(wantOptions, ", ") {
						t.Errorf("shown answer %q, want %q", got, strings.Join(wantOptions, ", "))
					}
					if eval[bool](t, tab, `!document.getElementById('form-error').hidden`) {
						t.Error("an error is shown after a successful send")
					}
					screenshot(t, tab, name+"-submitted")
					checkAxe(t, tab, name+"-submitted")

					// The second tab got there live.
					waitState(t, watcher, "submitted")
					if got := eval[string](t, watcher, `document.getElementById('given-text').textContent`); got != "typed on "+name {
						t.Errorf("second tab shows %q", got)
					}
					// The store holds exactly what the page sent.
					r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/result", "", "Authorization", "Bearer "+alice)
					var res struct {
						Result struct {
							SelectedOptions []string `json:"selectedOptions"`
							FreeText        string   `json:"freeText"`
						} `json:"result"`
					}
					if err := json.Unmarshal([]byte(r.Body), &res); err != nil || strings.Join(res.Result.SelectedOptions, ", ") != strings.Join(wantOptions, ", ") || res.Result.FreeText != "typed on "+name {
						t.Errorf("stored result %s", r.Body)
					}
					noXSS(t, tab, name)
				})
			}
		}
	}
	if strings.Contains(c.logs.String(), "#t=") {
		t.Error("a capability link appears in Caddy's log")
	}
}

// redisSitesShort is redisSites with timeouts short enough to watch a
// question expire.
func redisSitesShort(url string) string {
	return strings.Replace(redisSites(url), "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmin_timeout 1s", 1)
}

// TestAnswerPageStates: expired, cancelled (by another process through
// Redis), unknown/wrong links, the device's language and colour scheme, and
// reconnecting after a config reload.
func TestAnswerPageStates(t *testing.T) {
	rs := redistest.Start(t)
	c := startCaddy(t, redisSitesShort(rs.URL()))
	st, err := store.NewRedis(store.RedisOptions{URL: rs.URL(), KeyPrefix: "e2e:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	browser := newBrowser(t)
	alice := token(t, "alice")

	t.Run("cancelled", func(t *testing.T) {
		for _, v := range []struct{ theme, lang string }{{"light", "en"}, {"dark", "zh"}} {
			cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Run the **migration**?","predefinedOptions":["yes","no"]}`)
			tab := newTab(t, browser, phone)
			step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "theme="+v.theme+"&lang="+v.lang, capTok)))
			waitState(t, tab, "pending")
			waitFor(t, tab, "live connection", `document.getElementById('main').dataset.connects === '1'`)
			// The agent withdraws the question through another client of
			// the same Redis; Caddy hears it over pub/sub, the page over
			// its socket.
			if _, err := st.Cancel(t.Context(), cr.SessionID); err != nil {
				t.Fatal(err)
			}
			waitState(t, tab, "cancelled")
			if eval[bool](t, tab, `!document.getElementById('answer').hidden`) {
				t.Error("the form is still shown for a cancelled question")
			}
			name := "cancelled-" + v.theme + "-" + v.lang + "-phone"
			screenshot(t, tab, name)
			checkAxe(t, tab, name)
		}
	})

	t.Run("expired", func(t *testing.T) {
		for _, v := range []struct{ theme, lang string }{{"dark", "en"}, {"light", "zh"}} {
			cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Quick: ship it?","predefinedOptions":["yes","no"],"timeout":2}`)
			tab := newTab(t, browser, desktop)
			step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "theme="+v.theme+"&lang="+v.lang, capTok)))
			// Nothing writes when a deadline passes: the page flips because
			// its watcher wakes at the deadline and asks the store.
			waitState(t, tab, "expired")
			name := "expired-" + v.theme + "-" + v.lang + "-desktop"
			screenshot(t, tab, name)
			checkAxe(t, tab, name)
			if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"selectedOptions":["yes"]}`, "X-Feedback-Token", capTok); r.Status != 410 {
				t.Errorf("submit after expiry: %d %s", r.Status, r.Body)
			}
		}
	})

	t.Run("not found", func(t *testing.T) {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"secret question"}`)
		for _, v := range []struct{ name, url string }{
			{"wrong-token", pageURL(c.HTTP, cr.SessionID, "lang=en", capTok+"X")},
			{"no-token", pageURL(c.HTTP, cr.SessionID, "lang=zh&theme=dark", "")},
			{"unknown-id", pageURL(c.HTTP, "123e4567-e89b-12d3-a456-426614174000", "lang=en&theme=dark", capTok)},
			{"malformed-id", pageURL(c.HTTP, "not-a-session", "lang=en", capTok)},
		} {
			tab := newTab(t, browser, phone)
			step(t, tab, "open "+v.name, chromedp.Navigate(v.url))
			waitState(t, tab, "notfound")
			if got := eval[string](t, tab, `document.body.innerText`); strings.Contains(got, "secret question") {
				t.Errorf("%s: the page shows the question", v.name)
			}
			screenshot(t, tab, "notfound-"+v.name+"-phone")
			checkAxe(t, tab, "notfound-"+v.name+"-phone")
		}
	})

	t.Run("device defaults", func(t *testing.T) {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"which language?","predefinedOptions":["a","b"]}`)
		tab := newTab(t, browser, phone)
		if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(tab, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
			t.Fatal(err)
		}
		// Anything but zh/en and dark/light is ignored.
		step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=fr&theme=%3Cscript%3E", capTok)))
		waitState(t, tab, "pending")
		if got := eval[string](t, tab, `document.documentElement.lang + ' ' + getComputedStyle(document.body).backgroundColor`); got != "zh-CN rgb(17, 19, 23)" {
			t.Errorf("lang and background %q, want zh-CN and the dark theme", got)
		}
		screenshot(t, tab, "defaults-zh-prefers-dark-phone")
	})

	t.Run("reconnects after reload", func(t *testing.T) {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"still live after a reload?"}`)
		tab := newTab(t, browser, desktop)
		step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "", capTok)))
		waitState(t, tab, "pending")
		waitFor(t, tab, "live connection", `document.getElementById('main').dataset.connects === '1'`)
		c.reload(strings.Replace(redisSitesShort(rs.URL()), "min_timeout 1s", "min_timeout 2s", 1))
		// 1012 makes the page reconnect to the new configuration at once.
		waitFor(t, tab, "reconnection", `document.getElementById('main').dataset.connects === '2'`)
		if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"after reload"}`, "X-Feedback-Token", capTok); r.Status != 200 {
			t.Fatalf("submit: %d %s", r.Status, r.Body)
		}
		waitState(t, tab, "submitted")
	})
}

// TestAnswerPagePollingFallback: when the socket cannot connect, the page
// polls and still sees the answer given elsewhere.
func TestAnswerPagePollingFallback(t *testing.T) {
	c := startCaddy(t, `
http://127.0.0.1:{HTTP} {
	route {
		respond /ws/* "no sockets in this test" 503
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
		}
	}
}
`)
	browser := newBrowser(t)
	cr, capTok := createSession(t, c.Client, c.HTTP, token(t, "alice"), `{"message":"poll?"}`)
	tab := newTab(t, browser, phone)
	step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en", capTok)))
	waitState(t, tab, "pending")
	waitFor(t, tab, "reconnecting notice", `document.getElementById('conn').textContent === 'Reconnecting…'`)
	if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"answered elsewhere"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	waitState(t, tab, "submitted")
	if got := eval[string](t, tab, `document.getElementById('given-text').textContent`); got != "answered elsewhere" {
		t.Errorf("shown answer %q", got)
	}
}

// TestAnswerPageXSS: hostile message, options and metadata run nothing and
// show as text.
func TestAnswerPageXSS(t *testing.T) {
	c := startCaddy(t, memorySites)
	browser := newBrowser(t)
	alice := token(t, "alice")
	message := strings.Join([]string{
		"# Review <script>window.__xss=1</script>",
		`<img src=x onerror="window.__xss=1">`,
		`<svg onload="window.__xss=1"><circle r=9></circle></svg>`,
		`<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>`,
		`[click me](javascript:window.__xss=1) [entity](jav&#x61;script:window.__xss=1) <javascript:window.__xss=1>`,
		`<a href="https://ok.example" onclick="window.__xss=1">handler link</a>`,
		`[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)`,
		`![tracking pixel](https://tracker.example/p.gif)`,
		`<details open ontoggle="window.__xss=1">x</details> <style>body{display:none}</style>`,
		"```\n<script>window.__xss=1</script>\n```",
		`[real link](https://docs.example/guide)`,
	}, "\n\n")
	options := []string{
		`<img src=x onerror=window.__xss=1>`,
		`"><script>window.__xss=1</script>`,
		`javascript:window.__xss=1`,
		`<svg/onload=window.__xss=1>`,
	}
	metadata := map[string]any{
		"<b onmouseover=window.__xss=1>key</b>": `<script>window.__xss=1</script>`,
		"bidi":                                  "safe\u202Eexe.txt",
		"nested":                                map[string]any{"x": `<img src=x onerror=window.__xss=1>`},
	}
	body, _ := json.Marshal(map[string]any{"message": message, "predefinedOptions": options, "metadata": metadata, "allowFreeText": true})
	cr, capTok := createSession(t, c.Client, c.HTTP, alice, string(body))

	// Bidi overrides are refused in messages and options at the door.
	for _, bad := range []string{`{"message":"pay \u202Eyrots"}`, `{"message":"x","predefinedOptions":["yes\u2066no"]}`} {
		if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", bad, "Authorization", "Bearer "+alice); r.Status != 400 {
			t.Errorf("create with a bidi override: %d %s", r.Status, r.Body)
		}
	}

	tab := newTab(t, browser, desktop)
	step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en", capTok)))
	waitState(t, tab, "pending")
	waitFor(t, tab, "options", `document.querySelectorAll('#options input').length === 4`)
	// Let the browser try every resource the message names before looking.
	waitFor(t, tab, "images settled", `Array.prototype.every.call(document.images, function (i) { return i.complete; })`)
	noXSS(t, tab, "pending")
	if n := eval[int](t, tab, `document.querySelectorAll('#main script, #main iframe, #main svg, #main style, #main [onerror], #main [onclick], #main [onload], #main [ontoggle], #main [onmouseover]').length`); n != 0 {
		t.Errorf("%d dangerous elements in the page", n)
	}
	links := eval[[]string](t, tab, `Array.prototype.map.call(document.querySelectorAll('#message a'), function (a) { return a.getAttribute('href') + ' ' + a.rel; })`)
	if len(links) == 0 {
		t.Error("the real link was dropped")
	}
	for _, l := range links {
		if !strings.HasPrefix(l, "https://") || !strings.Contains(l, "noopener") || !strings.Contains(l, "noreferrer") || !strings.Contains(l, "nofollow") {
			t.Errorf("link %q", l)
		}
	}
	if got := eval[string](t, tab, `document.querySelector('#options label span').textContent`); got != options[0] {
		t.Errorf("first option shows as %q, want the literal text", got)
	}
	md := eval[string](t, tab, `document.getElementById('metadata').textContent`)
	if !strings.Contains(md, "safe⟨U+202E⟩exe.txt") || !strings.Contains(md, "<script>window.__xss=1</script>") {
		t.Errorf("metadata shown as %q", md)
	}
	if !eval[bool](t, tab, `window.__csp.some(function (v) { return v.indexOf('img-src https://tracker.example') === 0; })`) {
		t.Errorf("the remote image was not blocked by CSP: %v", eval[[]string](t, tab, `window.__csp`))
	}
	screenshot(t, tab, "xss-pending")
	checkAxe(t, tab, "xss-pending")

	step(t, tab, "answer with hostile text",
		chromedp.Click(chromedp.CSS(`#options label:nth-child(2)`)),
		chromedp.SendKeys(chromedp.ID("freetext"), `<img src=x onerror=window.__xss=1>`),
		chromedp.Click(chromedp.ID("submit")))
	waitState(t, tab, "submitted")
	if got := eval[string](t, tab, `document.getElementById('given-options').textContent + '|' + document.getElementById('given-text').textContent`); got != options[1]+"|<img src=x onerror=window.__xss=1>" {
		t.Errorf("answer shown as %q", got)
	}
	noXSS(t, tab, "submitted")
	screenshot(t, tab, "xss-submitted")

	// The checker checks: a planted text box without a label is reported.
	eval[chromedp.Void](t, tab, `document.getElementById('main').appendChild(document.createElement('input'))`)
	found := map[string]bool{}
	for _, v := range runAxe(t, tab, "negative-control") {
		found[v.ID] = true
	}
	if !found["label"] {
		t.Errorf("axe did not report a planted unlabelled input: %v", found)
	}
}

// TestAnswerPageFragmentOptions: theme and lang written inside the fragment,
// after the token (as when "?theme=dark&lang=zh" is appended to a whole
// answer link), work like the query; and once the page has read the token,
// it is in neither the address bar nor any history entry's URL, while a
// reload still works.
func TestAnswerPageFragmentOptions(t *testing.T) {
	c := startCaddy(t, memorySites)
	browser := newBrowser(t)
	alice := token(t, "alice")
	for _, v := range []struct {
		name       string
		link       func(feedbackURL string) string
		lang, bg   string
		wantSearch string
	}{
		{"query-appended-to-link", func(u string) string { return u + "?theme=dark&lang=zh" }, "zh-CN", "rgb(17, 19, 23)", "?theme=dark&lang=zh"},
		{"ampersands", func(u string) string { return u + "&lang=zh&theme=dark" }, "zh-CN", "rgb(17, 19, 23)", "?theme=dark&lang=zh"},
		{"query-wins", func(u string) string {
			base, frag, _ := strings.Cut(u, "#")
			return base + "?lang=en#" + frag + "?lang=zh&theme=light"
		}, "en", "rgb(246, 247, 249)", "?lang=en&theme=light"},
		{"plain", func(u string) string { return u }, "en", "", ""},
	} {
		t.Run(v.name, func(t *testing.T) {
			cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Ship it?","predefinedOptions":["yes","no"]}`)
			tab := newTab(t, browser, phone)
			link := v.link(cr.FeedbackURL)
			if !strings.Contains(link, capTok) {
				t.Fatalf("link %q lacks the token", link)
			}
			step(t, tab, "open", chromedp.Navigate(link))
			waitState(t, tab, "pending")
			if got := eval[string](t, tab, `document.documentElement.lang`); got != v.lang {
				t.Errorf("lang %q, want %q", got, v.lang)
			}
			if v.bg != "" {
				if got := eval[string](t, tab, `getComputedStyle(document.body).backgroundColor`); got != v.bg {
					t.Errorf("background %q, want %q", got, v.bg)
				}
			}
			if got := eval[string](t, tab, `location.search + '|' + location.hash`); got != v.wantSearch+"|" {
				t.Errorf("address is …%s, want the query %q and no fragment", got, v.wantSearch)
			}
			checkHistory(t, tab, capTok)
			if v.name == "query-appended-to-link" {
				screenshot(t, tab, "fragment-options-dark-zh-phone")
			}

			// A reload (or a phone restoring the tab) still has the token.
			step(t, tab, "reload", chromedp.Reload())
			waitState(t, tab, "pending")
			step(t, tab, "answer", chromedp.Click(chromedp.CSS(`#options label:nth-child(1)`)), chromedp.Click(chromedp.ID("submit")))
			waitState(t, tab, "submitted")
			if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/result", "", "Authorization", "Bearer "+alice); !strings.Contains(r.Body, `"selectedOptions":["yes"]`) {
				t.Errorf("result %s", r.Body)
			}
			checkHistory(t, tab, capTok)
			noXSS(t, tab, v.name)
		})
	}
}

// checkHistory fails if the capability token is in the address bar or in
// the URL of any entry of the tab's history.
func checkHistory(t *testing.T, tab context.Context, capTok string) {
	t.Helper()
	if got := eval[string](t, tab, `location.href`); strings.Contains(got, capTok) || strings.Contains(got, "#t=") {
		t.Errorf("the address bar still holds the token: %s", got)
	}
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	h, err := chromedp.Call(ctx, page.GetNavigationHistory, cdp.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h.Entries {
		if strings.Contains(e.URL, capTok) {
			t.Errorf("history entry %d holds the token: %s", e.ID, e.URL)
		}
	}
}

// TestAnswerPageInvisibleCharacters: invisible format characters in the
// free text are shown, and nothing is sent until they are removed.
func TestAnswerPageInvisibleCharacters(t *testing.T) {
	c := startCaddy(t, memorySites)
	browser := newBrowser(t)
	alice := token(t, "alice")
	for _, lang := range []string{"en", "zh"} {
		t.Run(lang, func(t *testing.T) {
			cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Anything to add?","predefinedOptions":["ok"]}`)
			tab := newTab(t, browser, desktop)
			step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang="+lang, capTok)))
			waitState(t, tab, "pending")
			if eval[bool](t, tab, `!document.getElementById('freetext-warning').hidden`) {
				t.Fatal("a warning before anything was typed")
			}
			// Pasted text with a zero-width space, a word joiner and a tag
			// character (as hidden-instruction tricks use).
			step(t, tab, "paste", chromedp.Focus(chromedp.ID("freetext")))
			if _, err := chromedp.Call(tab, input.InsertText, input.InsertTextParams{Text: "ship\u200bit\u2060 now\U000E0041"}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, tab, "warning", `!document.getElementById('freetext-warning').hidden`)
			warning := eval[string](t, tab, `document.getElementById('freetext-warning-text').textContent + '|' + document.getElementById('freetext-shown').textContent`)
			for _, want := range []string{"3", "U+200B", "U+2060", "U+E0041", "ship⟨U+200B⟩it⟨U+2060⟩ now⟨U+E0041⟩"} {
				if !strings.Contains(warning, want) {
					t.Errorf("warning %q lacks %q", warning, want)
				}
			}
			if got := eval[string](t, tab, `document.getElementById('freetext').getAttribute('aria-invalid')`); got != "true" {
				t.Errorf("aria-invalid %q", got)
			}
			screenshot(t, tab, "invisible-"+lang+"-desktop")
			checkAxe(t, tab, "invisible-"+lang+"-desktop")

			// Sending is refused (by click and by Ctrl+Enter); the focus goes to the fix.
			step(t, tab, "try to send", chromedp.Click(chromedp.ID("option-0")), chromedp.Click(chromedp.ID("submit")))
			step(t, tab, "try Ctrl+Enter", chromedp.Focus(chromedp.ID("freetext")), chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
			if got := eval[string](t, tab, `document.getElementById('main').dataset.state + ' ' + document.activeElement.id`); got != "pending freetext-clean" {
				t.Errorf("after trying to send: %q, want pending with the focus on the remove button", got)
			}
			if r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+alice); !strings.Contains(r.Body, `"pending"`) {
				t.Fatalf("something was sent: %s", r.Body)
			}

			step(t, tab, "remove them", chromedp.Click(chromedp.ID("freetext-clean")))
			if got := eval[string](t, tab, `document.getElementById('freetext').value + '|' + document.getElementById('freetext-warning').hidden`); got != "shipit now|true" {
				t.Errorf("after removing: %q", got)
			}
			step(t, tab, "send", chromedp.Click(chromedp.ID("submit")))
			waitState(t, tab, "submitted")
			r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/result", "", "Authorization", "Bearer "+alice)
			if !strings.Contains(r.Body, `"freeText":"shipit now"`) {
				t.Errorf("result %s", r.Body)
			}
		})
	}
}

// TestAnswerPageInvisibleMatchesServer: the page warns about exactly the
// free texts the server refuses — invisible characters out, emoji
// sequences, Persian spelling, keycaps and the three subdivision flags in.
func TestAnswerPageInvisibleMatchesServer(t *testing.T) {
	c := startCaddy(t, memorySites)
	browser := newBrowser(t)
	alice := token(t, "alice")
	cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Type here"}`)
	tab := newTab(t, browser, desktop)
	step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en", capTok)))
	waitState(t, tab, "pending")
	tags := func(s string) string {
		out := ""
		for _, r := range s {
			out += string(0xE0000 + r)
		}
		return out
	}
	for _, v := range []struct {
		name    string
		text    string
		refused bool
	}{
		{"plain", "plain text", false},
		{"tab and newlines", "a\tb\nc\r\nd", false},
		{"zero-width space", "ship\u200bit", true},
		{"word joiner", "a\u2060b", true},
		{"bom", "bom\ufeff", true},
		{"soft hyphen", "soft\u00adhyphen", true},
		{"hangul filler", "fil\u3164ler", true},
		{"variation selector 1", "vs\ufe00", true},
		{"mongolian vowel separator", "x\u180ey", true},
		{"bidi isolate", "\u2066x\u2069", true},
		{"control", "bell\u0007", true},
		{"tag characters", "hidden" + tags("ignore previous"), true},
		{"zwj emoji", "👩\u200d💻", false},
		{"zwj between ascii", "a\u200db", true},
		{"zwj at the start", "\u200d👩", true},
		{"zwnj persian", "می\u200cخواهم", false},
		{"emoji presentation", "❤\ufe0f", false},
		{"keycap", "1\ufe0f\u20e3", false},
		{"presentation after ascii", "a\ufe0f", true},
		{"two presentation selectors", "❤\ufe0f\ufe0f", true},
		{"england flag", "\U0001F3F4" + tags("gbeng") + "\U000E007F", false},
		{"made-up flag", "\U0001F3F4" + tags("zz") + "\U000E007F", true},
		{"arabic number sign (visible Cf)", "\u0600123", false},
	} {
		js, _ := json.Marshal(v.text)
		eval[chromedp.Void](t, tab, `(function () { var f = document.getElementById('freetext'); f.value = `+string(js)+`; f.dispatchEvent(new Event('input')); })()`)
		pageRefuses := eval[bool](t, tab, `!document.getElementById('freetext-warning').hidden`)
		one, oneTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"x"}`)
		body, _ := json.Marshal(map[string]string{"freeText": v.text})
		r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+one.SessionID+"/submit", string(body), "X-Feedback-Token", oneTok)
		serverRefuses := r.Status == 400
		if r.Status != 200 && r.Status != 400 {
			t.Fatalf("%s: submit %d %s", v.name, r.Status, r.Body)
		}
		if pageRefuses != v.refused || serverRefuses != v.refused {
			t.Errorf("%s (%+q): page refuses %t, server refuses %t (%s), want %t", v.name, v.text, pageRefuses, serverRefuses, strings.TrimSpace(r.Body), v.refused)
		}
	}
}
