package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// questionSites: the memory site with a 1 s minimum timeout, so that a
// question can be watched closing.
var questionSites = strings.Replace(memorySites, "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmin_timeout 1s", 1)

// TestAnswerPageRicherQuestions: described and recommended options, a form
// of several typed questions and drafts, on a phone viewport with the
// keyboard, in the real browser against the real Caddy; axe-core finds
// nothing serious.
func TestAnswerPageRicherQuestions(t *testing.T) {
	c := startCaddy(t, questionSites)
	browser := newBrowser(t)
	alice := token(t, "alice")
	result := func(t *testing.T, id string) json.RawMessage {
		t.Helper()
		r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+id+"/result", "", "Authorization", "Bearer "+alice)
		var res struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(r.Body), &res); err != nil {
			t.Fatalf("result %d %s", r.Status, r.Body)
		}
		return res.Result
	}

	t.Run("described options", func(t *testing.T) {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Which database for the **cache**?","preselectRecommended":true,"predefinedOptions":[
			{"label":"Postgres","description":"What we run today: no new service.","recommended":true},
			{"label":"SQLite","description":"One file per instance; nothing shared."},
			"Decide later"]}`)
		tab := newTab(t, browser, phone)
		step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en&theme=light", capTok)))
		waitState(t, tab, "pending")
		waitFor(t, tab, "options", `document.querySelectorAll('#options input').length === 3`)
		// The description sits under its label, tied to the input; the
		// recommended one is marked, and selected because the asker said so.
		if got := eval[string](t, tab, `document.getElementById('option-1-desc').textContent + '|' + document.getElementById('option-1').getAttribute('aria-describedby')`); got != "One file per instance; nothing shared.|option-1-desc" {
			t.Errorf("description %q", got)
		}
		if got := eval[string](t, tab, `Array.from(document.querySelectorAll('#options .badge')).map(function (b) { return b.closest('label').querySelector('input').value + ':' + b.textContent; }).join()`); got != "Postgres:Recommended" {
			t.Errorf("badges %q", got)
		}
		if !eval[bool](t, tab, `document.getElementById('option-0').checked && !document.getElementById('option-1').checked`) {
			t.Error("the recommended option is not preselected")
		}
		screenshot(t, tab, "described-options-light-en-phone")
		checkAxe(t, tab, "described-options-light-en-phone")
		// Keyboard: Enter picks another option, Ctrl+Enter sends.
		step(t, tab, "pick with the keyboard", chromedp.Focus(chromedp.ID("option-1")), chromedp.KeyEvent(kb.Enter))
		step(t, tab, "send", chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
		waitState(t, tab, "submitted")
		if got := eval[string](t, tab, `document.getElementById('given-options').textContent`); got != "SQLite" {
			t.Errorf("shown answer %q", got)
		}
		checkAxe(t, tab, "described-options-light-en-phone-submitted")
		var res struct {
			SelectedOptions []string `json:"selectedOptions"`
			Via             string   `json:"via"`
		}
		if err := json.Unmarshal(result(t, cr.SessionID), &res); err != nil || strings.Join(res.SelectedOptions, ",") != "SQLite" || res.Via != "link" {
			t.Errorf("stored %+v %v", res, err)
		}
		noXSS(t, tab, "described options")
	})

	t.Run("form of questions", func(t *testing.T) {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Release **2.4**: a few things first.","questions":[
			{"id":"env","message":"Deploy where?","kind":"single","required":true,"options":[{"label":"prod","description":"All customers."},{"label":"staging","recommended":true}]},
			{"id":"checks","message":"Which checks ran?","kind":"multi","options":["unit","e2e","load"],"min":1},
			{"id":"note","message":"Anything for the changelog?","kind":"text","max":200},
			{"id":"ok","message":"Migrations reviewed?","kind":"boolean","required":true},
			{"id":"count","message":"How many canaries?","kind":"number","min":1,"max":10,"required":true,"default":2}]}`)
		tab := newTab(t, browser, phone)
		step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=zh&theme=dark", capTok)))
		waitState(t, tab, "pending")
		waitFor(t, tab, "questions", `document.querySelectorAll('#questions .question-field').length === 5`)
		if got := eval[string](t, tab, `document.getElementById('q-count').value + '|' + document.getElementById('q-count').type + '|' + document.getElementById('q-ok-0').type`); got != "2|number|radio" {
			t.Errorf("number default and input types %q", got)
		}
		// Sending with a required question unanswered names it, on the page.
		step(t, tab, "send too early", chromedp.Focus(chromedp.ID("q-note")), chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
		if got := eval[string](t, tab, `document.getElementById('main').dataset.state + '|' + document.getElementById('form-error').textContent`); !strings.HasPrefix(got, "pending|") || !strings.Contains(got, "Deploy where?") {
			t.Errorf("sending early: %q", got)
		}
		// Keyboard only.
		step(t, tab, "answer with the keyboard",
			chromedp.Focus(chromedp.ID("q-env-0")), chromedp.KeyEvent(kb.Enter),
			chromedp.Focus(chromedp.ID("q-checks-1")), chromedp.KeyEvent(kb.Enter),
			chromedp.Focus(chromedp.ID("q-note")), chromedp.KeyEvent("ship it 🚀"),
			chromedp.Focus(chromedp.ID("q-ok-0")), chromedp.KeyEvent(kb.Enter),
			chromedp.Focus(chromedp.ID("q-count")), chromedp.KeyEvent(kb.Backspace), chromedp.KeyEvent("3"))
		screenshot(t, tab, "form-dark-zh-phone")
		checkAxe(t, tab, "form-dark-zh-phone")

		// A reload (or a phone dropping the tab) keeps what was entered.
		// Wait on the new document's DOM before evaluating in it: right after
		// a load the browser may still report the old execution context.
		step(t, tab, "reload", chromedp.Reload(), chromedp.WaitReady(chromedp.ID("q-count")))
		waitState(t, tab, "pending")
		waitFor(t, tab, "questions again", `document.querySelectorAll('#questions .question-field').length === 5`)
		restored := `[document.getElementById('q-env-0').checked, document.getElementById('q-checks-1').checked, document.getElementById('q-checks-0').checked,
			document.getElementById('q-note').value, document.getElementById('q-ok-0').checked, document.getElementById('q-count').value].join('|')`
		if got := eval[string](t, tab, restored); got != "true|true|false|ship it 🚀|true|3" {
			t.Fatalf("after a reload the form holds %q", got)
		}
		step(t, tab, "send", chromedp.Focus(chromedp.ID("q-count")), chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
		waitFor(t, tab, "the answer sent", `document.getElementById('main').dataset.state === 'submitted' || !!document.getElementById('form-error').textContent`)
		if got := eval[string](t, tab, `document.getElementById('form-error').textContent`); got != "" {
			t.Fatalf("sending failed: %s", got)
		}
		waitState(t, tab, "submitted")
		if got := eval[string](t, tab, `document.getElementById('given-answers').innerText`); !strings.Contains(got, "ship it 🚀") || !strings.Contains(got, "是") {
			t.Errorf("shown answers %q", got)
		}
		checkAxe(t, tab, "form-dark-zh-phone-submitted")
		if !eval[bool](t, tab, `localStorage.getItem('fb-draft:`+cr.SessionID+`') === null`) {
			t.Error("the draft is kept after the answer was sent")
		}
		// Typed answers, in the questions' order.
		var res struct {
			Answers json.RawMessage `json:"answers"`
		}
		if err := json.Unmarshal(result(t, cr.SessionID), &res); err != nil || string(res.Answers) != `{"env":"prod","checks":["e2e"],"note":"ship it 🚀","ok":true,"count":3}` {
			t.Errorf("stored answers %s %v", res.Answers, err)
		}
		noXSS(t, tab, "form")
	})

	t.Run("images", func(t *testing.T) {
		shot := pngOf(t, 120, 80)
		// A real PNG with an HTML page after its end: it must only ever be an image.
		poly := append(pngOf(t, 4, 4), []byte("<html><script>alert(1)</script></html>")...)
		body := fmt.Sprintf(`{"message":"Does the **header** look right?","predefinedOptions":["yes","no"],"images":[`+
			`{"data":%q,"mediaType":"image/png","alt":"The new header, desktop width"},{"data":%q,"mediaType":"image/png"}]}`,
			base64.StdEncoding.EncodeToString(shot), base64.StdEncoding.EncodeToString(poly))
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, body)
		tab := newTab(t, browser, phone)
		step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en&theme=dark", capTok)))
		waitState(t, tab, "pending")
		waitFor(t, tab, "images loaded", `Array.from(document.querySelectorAll('#images img')).every(function (i) { return i.dataset.loaded === '1' && i.complete && i.naturalWidth > 0; }) && document.querySelectorAll('#images img').length === 2`)
		if got := eval[string](t, tab, `[document.getElementById('image-0').naturalWidth, document.getElementById('image-0').alt, document.getElementById('image-1').alt, document.getElementById('image-0').src.slice(0, 5)].join('|')`); got != "120|The new header, desktop width|Image 2 from your agent|blob:" {
			t.Errorf("images %q", got)
		}
		// What the page fetched is an image that can never be a document.
		hdrs, err := chromedp.Run(tab, chromedp.Evaluate[string](`fetch(location.pathname + '/image/1', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({token: history.state.fbToken})})
			.then(function (r) { return [r.status, r.headers.get('content-type'), r.headers.get('x-content-type-options'), r.headers.get('content-security-policy')].join('|'); })`,
			chromedp.EvalAwaitPromise))
		if err != nil || hdrs != "200|image/png|nosniff|default-src 'none'; sandbox" {
			t.Errorf("polyglot served with %q (%v)", hdrs, err)
		}
		screenshot(t, tab, "images-dark-en-phone")
		checkAxe(t, tab, "images-dark-en-phone")
		noXSS(t, tab, "images")
	})

	t.Run("draft shown when the question closes", func(t *testing.T) {
		cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Quick: which one?","predefinedOptions":["a","b"],"timeout":3,"onTimeout":{"action":"choose","option":"b"}}`)
		tab := newTab(t, browser, phone)
		step(t, tab, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en", capTok)))
		waitState(t, tab, "pending")
		step(t, tab, "start an answer", chromedp.Focus(chromedp.ID("option-0")), chromedp.KeyEvent(kb.Enter),
			chromedp.Focus(chromedp.ID("freetext")), chromedp.KeyEvent("half-written thought"))
		waitState(t, tab, "expired")
		if got := eval[string](t, tab, `document.getElementById('draft').hidden + '|' + document.getElementById('draft-body').innerText`); !strings.HasPrefix(got, "false|") ||
			!strings.Contains(got, "half-written thought") || !strings.Contains(got, "a") {
			t.Errorf("draft after expiry %q", got)
		}
		if got := eval[string](t, tab, `document.getElementById('timeout-choice').hidden + '|' + document.getElementById('timeout-choice-option').textContent`); got != "false|b" {
			t.Errorf("timeout choice %q", got)
		}
		if eval[bool](t, tab, `!!document.querySelector('#draft textarea, #draft input')`) {
			t.Error("the draft is editable")
		}
		screenshot(t, tab, "draft-expired-en-phone")
		checkAxe(t, tab, "draft-expired-en-phone")
		var res struct {
			SelectedOptions []string `json:"selectedOptions"`
			Via             string   `json:"via"`
			ByTimeout       bool     `json:"byTimeout"`
		}
		if err := json.Unmarshal(result(t, cr.SessionID), &res); err != nil || strings.Join(res.SelectedOptions, ",") != "b" || res.Via != "timeout" || !res.ByTimeout {
			t.Errorf("stored %+v %v", res, err)
		}
	})
}

// TestMCPRicherQuestions: the official TypeScript SDK client (e2e/mcpjs/
// questions.mjs) asks with a choose timeout policy and gets the option
// back marked as the timeout's; asks a form and gets typed answers, given
// over REST or in its own form elicitation.
func TestMCPRicherQuestions(t *testing.T) {
	// Under /el/ the same store asks in the client's own form.
	c := startMCPCaddy(t, `
http://127.0.0.1:{HTTP} {
	handle_path /el/* {
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
			min_timeout 1s
			elicitation form
		}
	}
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		min_timeout 1s
	}
}
`)
	alice := token(t, "alice")
	wantAnswers := func(t *testing.T, res toolResult, want string) {
		t.Helper()
		r, _ := res.Structured["result"].(map[string]any)
		got, _ := json.Marshal(r["answers"])
		if res.Structured["status"] != "submitted" || string(got) != want {
			t.Fatalf("result %+v, answers %s, want %s", res, got, want)
		}
	}

	t.Run("choose on timeout", func(t *testing.T) {
		p := runScript(t, "questions.mjs", "http", c.HTTP+"/mcp", "choose", alice)
		res := asResult(t, p.expect("result"))
		r, _ := res.Structured["result"].(map[string]any)
		if res.IsError || res.Structured["status"] != "expired" || r == nil || fmt.Sprint(r["selectedOptions"]) != "[roll back]" ||
			r["byTimeout"] != true || r["via"] != "timeout" {
			t.Fatalf("result %+v", res)
		}
		if !strings.Contains(res.Text, `"roll back", chosen by the timeout, not by the user`) {
			t.Errorf("text %q does not say the timeout chose", res.Text)
		}
		if w := fmt.Sprint(res.Structured["warnings"]); !strings.Contains(w, "timeout 0 is below the minimum; using 1 seconds") {
			t.Errorf("warnings %s", w)
		}
		p.finish()
	})

	t.Run("form answered on the page's API", func(t *testing.T) {
		p := runScript(t, "questions.mjs", "http", c.HTTP+"/mcp", "form", alice)
		created := asResult(t, p.expect("created"))
		link, _ := created.Structured["feedbackUrl"].(string)
		answer(t, c, link, `{"answers":{"env":"staging","checks":["unit","load"],"ok":false,"count":7.5},"freeText":"all good"}`)
		res := asResult(t, p.expect("result"))
		wantAnswers(t, res, `{"checks":["unit","load"],"count":7.5,"env":"staging","ok":false}`)
		if !strings.Contains(res.Text, `"env":"staging"`) {
			t.Errorf("text %q lacks the answers", res.Text)
		}
		p.finish()
	})

	t.Run("image content block", func(t *testing.T) {
		p := runScript(t, "questions.mjs", "http", c.HTTP+"/mcp", "image", alice)
		ev := p.expect("created")
		res := asResult(t, ev)
		link, _ := res.Structured["feedbackUrl"].(string)
		u, capTok, ok := strings.Cut(link, "#t=")
		if res.IsError || !ok {
			t.Fatalf("created %+v", res)
		}
		v := do(t, c.Client, "POST", u+"/view", `{"token":"`+capTok+`"}`, "Content-Type", "application/json")
		if v.Status != 200 || !strings.Contains(v.Body, `"images":[{"mediaType":"image/png","bytes":`) {
			t.Fatalf("view %d %s", v.Status, v.Body)
		}
		img := do(t, c.Client, "POST", u+"/image/0", `{"token":"`+capTok+`"}`, "Content-Type", "application/json")
		want, _ := base64.StdEncoding.DecodeString(ev["png"].(string))
		if img.Status != 200 || img.Body != string(want) {
			t.Fatalf("image %d, %d bytes", img.Status, len(img.Body))
		}
		p.finish()
	})

	t.Run("form in the client's elicitation", func(t *testing.T) {
		p := runScript(t, "questions.mjs", "http", c.HTTP+"/el/mcp", "form-elicit", alice)
		el := p.expect("elicitation")["params"].(map[string]any)
		schema, _ := json.Marshal(el["requestedSchema"])
		for _, want := range []string{`"env":{"description":"Deploy where?\n- prod: All customers","enum":["prod","staging"],"title":"Deploy where?","type":"string"}`,
			`"count":{"maximum":10,"minimum":1,"title":"How many canaries?","type":"number"}`, `"required":["env","ok","count"]`, `"ok":{"title":"Migrations reviewed?","type":"boolean"}`} {
			if !strings.Contains(string(schema), want) {
				t.Errorf("requestedSchema %s lacks %s", schema, want)
			}
		}
		res := asResult(t, p.expect("result"))
		wantAnswers(t, res, `{"checks":["unit","load"],"count":10,"env":"staging","note":"typed in the client","ok":true}`)
		if r := res.Structured["result"].(map[string]any); r["via"] != "elicitation" || r["freeText"] != "sent from the client form" {
			t.Errorf("result %v", r)
		}
		p.finish()
	})
}

// pngOf is a w×h PNG with a gradient, so that it is visibly an image.
func pngOf(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			img.Set(x, y, color.RGBA{R: uint8(2 * x), G: uint8(3 * y), B: 160, A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestMCPAppsRicherQuestions: the in-chat view of MCP Apps hosts shows an
// option's description and the recommendation, and sends a form of
// questions (which it cannot render) to the answer page instead of
// offering a form the server would refuse.
func TestMCPAppsRicherQuestions(t *testing.T) {
	hostDir := buildAppsHost(t)
	c := startMCPCaddy(t, appsSites(hostDir, ""))
	browser := newBrowser(t)

	tab, _ := openHost(t, browser, c, true, map[string]any{"message": "Which database?", "predefinedOptions": []any{
		map[string]any{"label": "Postgres", "description": "What we run today.", "recommended": true}, "SQLite"}})
	frame := viewFrame(t, tab)
	step(t, frame, "the options show", chromedp.WaitVisible(chromedp.ID("opt-1")))
	if html := frameHTML(t, frame, "#options"); !strings.Contains(html, "Postgres (Recommended)") || !strings.Contains(html, "What we run today.") {
		t.Errorf("options in the view: %s", html)
	}

	tab, _ = openHost(t, browser, c, true, map[string]any{"message": "A few things", "questions": []any{
		map[string]any{"id": "ok", "message": "Reviewed?", "kind": "boolean", "required": true}}})
	frame = viewFrame(t, tab)
	step(t, frame, "the form is read-only", chromedp.WaitVisible(chromedp.CSS(`.note[data-panel="readonly"]`)))
	if html := frameHTML(t, frame, `.note[data-panel="readonly"]`); !strings.Contains(html, "answer it on its answer page") {
		t.Errorf("note in the view: %s", html)
	}
	if form := inFrame(t, frame, "the form", chromedp.AttributeValue(chromedp.ID("answer"), "hidden")); !form.Exists {
		t.Error("the view offers its answer form for a form of questions")
	}
}
