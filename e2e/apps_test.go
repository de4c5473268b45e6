package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// MCP Apps against the real Caddy binary: a host page in headless Chromium
// built on the official parts (the TypeScript SDK's client to /mcp,
// ext-apps' AppBridge and PostMessageTransport to the view in a sandboxed
// iframe; e2e/appsjs, bundled with esbuild before the run) renders the
// question view the server serves, and the test answers in it as a person
// would, with clicks.

var appsjsDir, _ = filepath.Abs("appsjs")

// appsSites serves the test host's files beside the module, on the same
// origin, so that the host's MCP client talks to /mcp as a page of this
// site would.
func appsSites(hostDir string, extra string) string {
	return `
http://127.0.0.1:{HTTP} {
	handle_path /apps-host/* {
		root * ` + hostDir + `
		file_server
	}
	handle {
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
` + extra + `		}
	}
}
`
}

// buildAppsHost bundles e2e/appsjs/host.js into a fresh directory.
func buildAppsHost(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(appsjsDir, "node_modules", "@modelcontextprotocol", "ext-apps")); err != nil {
		t.Fatalf("e2e/appsjs/node_modules is missing: run `make deps` (npm ci in e2e/appsjs)")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node22(t), "build.mjs", dir)
	cmd.Dir = appsjsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bundling the test host: %v\n%s", err, out)
	}
	return dir
}

// appsRun is what appsHost.run resolves with.
type appsRun struct {
	Advertised   bool            `json:"advertised"`
	ModelTools   []string        `json:"modelTools"`
	AllTools     []string        `json:"allTools"`
	URI          string          `json:"uri"`
	MIMEType     string          `json:"mimeType"`
	ResourceMeta json.RawMessage `json:"resourceMeta"`
	Result       struct {
		IsError    bool                    `json:"isError"`
		Content    []struct{ Text string } `json:"content"`
		Structured map[string]any          `json:"structuredContent"`
		Meta       map[string]any          `json:"_meta"`
	} `json:"result"`
}

func (r appsRun) text() string {
	var b strings.Builder
	for _, c := range r.Result.Content {
		b.WriteString(c.Text)
	}
	return b.String()
}

// openHost opens the host page and runs it with args.
func openHost(t *testing.T, browser context.Context, c *Caddy, apps bool, args map[string]any) (context.Context, appsRun) {
	t.Helper()
	tab := newTab(t, browser, device{name: "desktop", width: 1000, height: 900})
	step(t, tab, "open the host", chromedp.Navigate(c.HTTP+"/apps-host/index.html"))
	opts, _ := json.Marshal(map[string]any{
		"token": token(t, "alice"), "apps": apps, "args": args,
		"hostContext": map[string]any{"theme": "dark", "locale": "en-US",
			"styles": map[string]any{"variables": map[string]string{"--color-ring-primary": "rgb(200, 80, 0)"}}},
	})
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](`appsHost.run(`+string(opts)+`)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("host run: %v", err)
	}
	var run appsRun
	if err := json.Unmarshal(raw, &run); err != nil {
		t.Fatalf("host run result %s: %v", raw, err)
	}
	return tab, run
}

// viewFrame is a context for the view's iframe: its own target when
// Chromium isolates the sandboxed frame in another process (it does, with
// site isolation on), so that queries and clicks happen inside the view.
func viewFrame(t *testing.T, tab context.Context) context.Context {
	t.Helper()
	var id string
	parent := chromedp.FromContext(tab).Target.TargetID
	ok := eventually(20*time.Second, func() bool {
		infos, err := chromedp.Targets(tab)
		if err != nil {
			return false
		}
		for _, info := range infos {
			if info.Type == "iframe" && info.ParentID == parent {
				id = string(info.TargetID)
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatal("the view's iframe never showed up as a target")
	}
	frame, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(target.ID(id)))
	t.Cleanup(cancel)
	// The first action attaches, and ties the attachment's life to the
	// context it is given: one without a deadline.
	if err := chromedp.Do(frame); err != nil {
		t.Fatalf("attaching to the view's frame: %v", err)
	}
	return frame
}

func TestMCPAppsInHost(t *testing.T) {
	hostDir := buildAppsHost(t)
	c := startMCPCaddy(t, appsSites(hostDir, ""))
	browser := newBrowser(t)
	t.Run("answered in the view, XSS inert, forged capability refused", func(t *testing.T) { testAppsAnswer(t, browser, c) })
	t.Run("the view follows a withdrawal", func(t *testing.T) { testAppsWithdrawn(t, browser, c) })
	t.Run("host without the extension", func(t *testing.T) { testAppsPlainHost(t, browser, c) })
}

func testAppsAnswer(t *testing.T, browser context.Context, c *Caddy) {
	// XSS in the message and the options: the view must run none of it.
	// An injection that ran would post to the host (recorded as a stray
	// message) or open a dialog.
	xss := []string{
		`<img src=x onerror="parent.postMessage('xss-img','*')">`,
		`<script>parent.postMessage('xss-script','*')</script>`,
		`[click](javascript:parent.postMessage('xss-link','*'))`,
		`<svg onload="parent.postMessage('xss-svg','*')"></svg>`,
		`<iframe srcdoc="<script>parent.parent.postMessage('xss-frame','*')</script>"></iframe>`,
		"![pixel](https://tracker.invalid/p.png)",
	}
	message := "Deploy **v2** to production?\n\n" + strings.Join(xss, "\n\n")
	options := []string{"Ship it", `<img src=x onerror="parent.postMessage('xss-opt','*')">`, "Wait"}
	tab, run := openHost(t, browser, c, true, map[string]any{"message": message, "predefinedOptions": options, "wait": true,
		"metadata": map[string]any{"task": `<b onmouseover="parent.postMessage('xss-meta','*')">deploy</b>`}})

	if !run.Advertised || run.URI != "ui://feedback/question" || run.MIMEType != "text/html;profile=mcp-app" {
		t.Fatalf("host saw advertised=%v uri=%q mime=%q", run.Advertised, run.URI, run.MIMEType)
	}
	if !strings.Contains(string(run.ResourceMeta), `"connectDomains":[]`) {
		t.Fatalf("resource _meta %s: want a CSP with no domains", run.ResourceMeta)
	}
	if strings.Join(run.ModelTools, ",") != "cancel_feedback,check_feedback_status,get_feedback_result,interactive_feedback" ||
		len(run.AllTools) != 6 {
		t.Fatalf("model sees %v of %v: the app-only tools must be hidden from it", run.ModelTools, run.AllTools)
	}
	if run.Result.IsError || run.Result.Meta["mcpfeedback/question"] == nil {
		t.Fatalf("interactive_feedback result: %s", run.text())
	}
	id, _ := run.Result.Structured["sessionId"].(string)

	frame := viewFrame(t, tab)
	step(t, frame, "the question shows", chromedp.WaitVisible(chromedp.ID("opt-0")))
	msgHTML := frameHTML(t, frame, "#message")
	if !strings.Contains(msgHTML, "<strong>v2</strong>") || strings.Contains(msgHTML, "onerror") || strings.Contains(msgHTML, "<script") ||
		strings.Contains(msgHTML, "javascript:") || strings.Contains(msgHTML, "<iframe") || strings.Contains(msgHTML, "onload") {
		t.Fatalf("the view's message HTML is not the sanitised Markdown: %s", msgHTML)
	}
	// The agent's metadata is text too.
	if meta := frameHTML(t, frame, "#metadata"); !strings.Contains(meta, "<dt>task</dt>") || !strings.Contains(meta, "&lt;b onmouseover=") {
		t.Fatalf("metadata in the view: %s", meta)
	}
	// An option with markup is its text: escaped inside a span, no element.
	optHTML := frameHTML(t, frame, "#options .option:nth-child(2) span")
	if optHTML != "<span>"+strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(options[1])+"</span>" {
		t.Fatalf("an option with markup must show as its text %q, got %s", options[1], optHTML)
	}
	theme := inFrame(t, frame, "theme", chromedp.AttributeValue(chromedp.CSS("html"), "data-theme"))
	if theme.Value != "dark" {
		t.Fatalf("host theme not applied: data-theme %+v", theme)
	}
	// The host's colour variable reaches the send button.
	bg := ""
	for _, p := range inFrame(t, frame, "button style", chromedp.ComputedStyle(chromedp.ID("submit"))) {
		if p.Name == "background-color" {
			bg = p.Value
		}
	}
	if bg != "rgb(200, 80, 0)" {
		t.Fatalf("send button background %q: the host's --color-ring-primary is not applied", bg)
	}
	if countdown := frameHTML(t, frame, "#countdown"); !strings.Contains(countdown, " left<") {
		t.Fatalf("countdown %s", countdown)
	}

	screenshot(t, tab, "apps-view-dark")

	// The app-only tool authorises itself: through the very session the
	// view uses, a forged or missing capability is refused.
	forged := []struct{ args, want string }{
		{fmt.Sprintf(`{"sessionId":%q,"token":"AAAAAAAAAAAAAAAAAAAAAAAAAA","answer":{"selectedOptions":["Wait"]}}`, id), "no question has this sessionId and token"},
		{fmt.Sprintf(`{"sessionId":%q,"answer":{"selectedOptions":["Wait"]}}`, id), "token is required"},
		{fmt.Sprintf(`{"sessionId":%q,"token":""}`, id), "token is empty"},
	}
	for _, f := range forged {
		got := evalAwait[map[string]any](t, tab, `appsHost.callAsView("feedback_app_answer", `+f.args+`)`)
		if got["isError"] != true || !strings.Contains(fmt.Sprint(got["text"]), f.want) {
			t.Fatalf("answer with %s: %v, want a tool error with %q", f.args, got, f.want)
		}
	}

	// The person clicks an option and sends it.
	clickInView(t, tab, frame, "#opt-0")
	clickInView(t, tab, frame, "#submit")
	{
		ctx, cancel := context.WithTimeout(frame, 30*time.Second)
		_, err := chromedp.Run(ctx, chromedp.WaitVisible(chromedp.CSS(`[data-state="submitted"] #given`)))
		cancel()
		if err != nil {
			t.Fatalf("the view never said sent: %v\nview: %s\nhost calls: %v", err, frameHTML(t, frame, "#main"),
				eval[[]map[string]any](t, tab, `appsHostState.calls`))
		}
	}
	if given := frameHTML(t, frame, "#given-options"); !strings.Contains(given, ">Ship it<") {
		t.Fatalf("the view shows the answer as %s", given)
	}
	screenshot(t, tab, "apps-view-answered")

	// The agent's waiting call has the answer.
	waitHost(t, tab, "the agent's answer", `appsHostState.agent !== null`)
	agent := eval[map[string]any](t, tab, `appsHostState.agent`)
	sc, _ := agent["structuredContent"].(map[string]any)
	res, _ := sc["result"].(map[string]any)
	if sc["status"] != "submitted" || fmt.Sprint(res["selectedOptions"]) != "[Ship it]" {
		t.Fatalf("the waiting agent got %v", agent)
	}

	// The view left the host a note for the model's next turn.
	waitHost(t, tab, "the view's note to the model", `appsHostState.modelContext.length > 0`)
	note := eval[string](t, tab, `JSON.stringify(appsHostState.modelContext)`)
	if !strings.Contains(note, id) || !strings.Contains(note, "get_feedback_result") || strings.Contains(note, "Ship it") {
		t.Fatalf("model context note %s: want the question's id and how to read the answer, not the answer", note)
	}

	// Nothing injected ran, in the view or anywhere.
	strays := eval[[]string](t, tab, `appsHostState.strays`)
	if xssFlag := eval[int](t, tab, `window.__xss`); len(strays) > 0 || xssFlag != 0 {
		t.Fatalf("injected script ran: strays %v, dialog %d", strays, xssFlag)
	}
	calls := eval[[]map[string]any](t, tab, `appsHostState.calls`)
	if len(calls) == 0 || calls[len(calls)-1]["name"] != "feedback_app_answer" || calls[len(calls)-1]["isError"] != false {
		t.Fatalf("the view's tool calls: %v", calls)
	}
}

// A question withdrawn by the agent: the view's poll sees it and says so.
func testAppsWithdrawn(t *testing.T, browser context.Context, c *Caddy) {
	tab, run := openHost(t, browser, c, true, map[string]any{"message": "Rotate the keys?", "predefinedOptions": []string{"yes", "no"}})
	id, _ := run.Result.Structured["sessionId"].(string)
	frame := viewFrame(t, tab)
	step(t, frame, "the question shows", chromedp.WaitVisible(chromedp.ID("opt-0")))
	got := evalAwait[map[string]any](t, tab, fmt.Sprintf(`appsHost.callAsView("cancel_feedback", {"sessionId":%q})`, id))
	if got["isError"] != false {
		t.Fatalf("cancel_feedback: %v", got)
	}
	step(t, frame, "the view shows the withdrawal", chromedp.WaitVisible(chromedp.CSS(`[data-state="cancelled"] [data-panel="cancelled"]`)))
	if form := inFrame(t, frame, "the form", chromedp.AttributeValue(chromedp.ID("answer"), "hidden")); !form.Exists {
		t.Fatal("the answer form is still shown for a withdrawn question")
	}
}

// A host that does not declare the extension: today's result, link and
// all, and no app-only tools in the list.
func testAppsPlainHost(t *testing.T, browser context.Context, c *Caddy) {
	_, run := openHost(t, browser, c, false, map[string]any{"message": "Ship it?"})
	if run.Advertised || run.URI != "" || len(run.AllTools) != 4 || run.Result.Meta != nil {
		t.Fatalf("plain host saw advertised=%v uri=%q tools=%v _meta=%v", run.Advertised, run.URI, run.AllTools, run.Result.Meta)
	}
	link, _ := run.Result.Structured["feedbackUrl"].(string)
	if !strings.Contains(run.text(), "Show this link to the user now") || link == "" || !strings.Contains(run.text(), link) {
		t.Fatalf("plain result changed: %q", run.text())
	}
}

// waitHost polls an expression in the host page until it is true (bounded).
func waitHost(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 40*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(35*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// inFrame runs one query in the view's frame, with a deadline.
func inFrame[T any](t *testing.T, frame context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(frame, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s in the view: %v", what, err)
	}
	return v
}

// frameHTML is the outer HTML of the first element matching css in the
// view's frame, read through the DOM domain (the frame's script context is
// not needed, and not trusted).
func frameHTML(t *testing.T, frame context.Context, css string) string {
	t.Helper()
	ids := inFrame(t, frame, css, chromedp.QueryNodeIDs(chromedp.CSS(css)))
	ctx, cancel := context.WithTimeout(frame, 30*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, dom.GetOuterHTML, dom.GetOuterHTMLParams{NodeID: ids[0]})
	if err != nil {
		t.Fatalf("outer HTML of %s in the view: %v", css, err)
	}
	return res.OuterHTML
}

// clickInView clicks the element css of the view as a person would: a
// mouse click at its place on the host page, which Chromium routes into
// the iframe. (Input events sent to the iframe's own target are not
// delivered to an out-of-process frame.)
func clickInView(t *testing.T, tab, frame context.Context, css string) {
	t.Helper()
	ids := inFrame(t, frame, css, chromedp.QueryNodeIDs(chromedp.CSS(css)))
	ctx, cancel := context.WithTimeout(frame, 30*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, dom.GetContentQuads, dom.GetContentQuadsParams{NodeID: ids[0]})
	if err != nil || len(res.Quads) == 0 || len(res.Quads[0]) != 8 {
		t.Fatalf("where %s is in the view: %v %v", css, res, err)
	}
	q := res.Quads[0]
	x, y := (q[0]+q[2]+q[4]+q[6])/4, (q[1]+q[3]+q[5]+q[7])/4
	origin := eval[[]float64](t, tab, `(() => { const f = document.getElementById('view'), r = f.getBoundingClientRect(); return [r.left + f.clientLeft, r.top + f.clientTop]; })()`)
	if at := eval[string](t, tab, fmt.Sprintf(`document.elementFromPoint(%f, %f).id`, origin[0]+x, origin[1]+y)); at != "view" {
		t.Fatalf("%s is not on the view's iframe at %v+(%v,%v) but on %q", css, origin, x, y, at)
	}
	step(t, tab, "click "+css, chromedp.MouseClickXY(origin[0]+x, origin[1]+y))
}
