package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestInboxRicherQuestions: what the answer page shows, the inbox shows
// too, built by the same script (form.js). Signed in through Caddy's
// basic_auth, the person sees a form of several questions and a question
// with described options, the recommended mark (preselected, as the asker
// asked) and an image (fetched with the sign-in, shown from a blob: URL);
// sending the form with a required question unanswered names it; both are
// answered in the inbox, and the agent's REST result holds the typed
// answers, given via the inbox. axe-core finds nothing serious.
func TestInboxRicherQuestions(t *testing.T) {
	c := startCaddy(t, inboxSites(t))
	tab := inboxTab(t, c)
	alice := token(t, "alice")

	form, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"Release **2.4**","allowFreeText":false,"questions":[
		{"id":"env","message":"Deploy where?","kind":"single","required":true,"options":[{"label":"prod","description":"All customers."},{"label":"staging","recommended":true}]},
		{"id":"count","message":"How many canaries?","kind":"number","min":1,"max":10},
		{"id":"ok","message":"Migrations reviewed?","kind":"boolean"}]}`)
	shot := pngOf(t, 120, 80)
	described, _ := createSession(t, c.Client, c.HTTP, alice, fmt.Sprintf(`{"message":"Which database?","preselectRecommended":true,"predefinedOptions":[
		{"label":"Postgres","description":"What we run today.","recommended":true},{"label":"SQLite","description":"One file per instance."}],
		"images":[{"data":%q,"mediaType":"image/png","alt":"The current schema"}]}`, base64.StdEncoding.EncodeToString(shot)))
	card := func(id string) string { return `document.querySelector('li.card[data-session="` + id + `"]')` }

	waitFor(t, tab, "both questions in the inbox", `document.querySelectorAll('#open li.card').length === 2`)
	waitFor(t, tab, "the image loaded", card(described.SessionID)+`.querySelector('img').dataset.loaded === '1' && `+card(described.SessionID)+`.querySelector('img').naturalWidth === 120`)
	if got := eval[string](t, tab, `(function (c) { var i = c.querySelector('img'); return [i.src.slice(0, 5), i.alt,
		Array.from(c.querySelectorAll('.badge')).map(function (b) { return b.closest('label').querySelector('input').value + ':' + b.textContent; }).join(),
		Array.from(c.querySelectorAll('.option-desc')).map(function (d) { return d.textContent; }).join('/'),
		c.querySelector('input[value="Postgres"]').checked, c.querySelector('input[value="SQLite"]').getAttribute('aria-describedby') ].join('|'); })(`+card(described.SessionID)+`)`); got !=
		"blob:|The current schema|Postgres:Recommended|What we run today./One file per instance.|true|option-"+described.SessionID+"-1-desc" {
		t.Errorf("the described question shows %q", got)
	}
	fq := func(q string) string { return `[name="` + form.SessionID + `-q-` + q + `"]` }
	if got := eval[string](t, tab, `(function (c) { return [c.querySelectorAll('.question-field').length, c.querySelector('`+fq("count")+`').type,
		c.querySelectorAll('`+fq("ok")+`').length, c.querySelector('`+fq("env")+`[value="prod"]').closest('label').querySelector('.option-desc').textContent].join('|'); })(`+card(form.SessionID)+`)`); got != "3|number|2|All customers." {
		t.Errorf("the form shows %q", got)
	}
	checkAxe(t, tab, "inbox-richer")
	screenshot(t, tab, "inbox-richer")
	noXSS(t, tab, "inbox-richer")

	// Sending with the required question unanswered names it, as the page does.
	formSel := `li.card[data-session="` + form.SessionID + `"]`
	step(t, tab, "send the form too early", chromedp.Click(chromedp.CSS(formSel+` button[type="submit"]`)))
	waitFor(t, tab, "the form's error", card(form.SessionID)+`.querySelector('form.answer > .form-error').textContent !== ''`)
	if got := eval[string](t, tab, card(form.SessionID)+`.querySelector('form.answer > .form-error').textContent`); !strings.Contains(got, "Deploy where?") {
		t.Errorf("sending early says %q", got)
	}
	step(t, tab, "answer the form",
		chromedp.Click(chromedp.CSS(formSel+` `+fq("env")+`[value="prod"]`)),
		chromedp.SendKeys(chromedp.CSS(formSel+` `+fq("count")), "3"),
		chromedp.Click(chromedp.CSS(formSel+` `+fq("ok")+`[value="true"]`)),
		chromedp.Click(chromedp.CSS(formSel+` button[type="submit"]`)))
	// The answered card moves to the finished list; clicking the other
	// before that layout change settles could land on the wrong place.
	waitFor(t, tab, "the form answered", `!!document.querySelector('#done li.card[data-session="`+form.SessionID+`"]')`)
	if got := eval[string](t, tab, card(form.SessionID)+`.querySelector('.status').textContent`); !strings.Contains(got, `env: "prod"`) || !strings.Contains(got, "count: 3") {
		t.Errorf("the finished form shows %q", got)
	}
	step(t, tab, "send the recommended option", chromedp.Click(chromedp.CSS(`li.card[data-session="`+described.SessionID+`"] button[type="submit"]`)))
	waitFor(t, tab, "both answered", `document.querySelectorAll('#done li.card').length === 2 && document.querySelectorAll('#open li.card').length === 0`)
	checkAxe(t, tab, "inbox-richer-done")

	result := func(id string) (out struct {
		Answers         json.RawMessage `json:"answers"`
		SelectedOptions []string        `json:"selectedOptions"`
		Via             string          `json:"via"`
	}) {
		r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+id+"/result", "", "Authorization", "Bearer "+alice)
		var res struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(r.Body), &res); err != nil {
			t.Fatalf("result %d %s", r.Status, r.Body)
		}
		if err := json.Unmarshal(res.Result, &out); err != nil {
			t.Fatalf("result %s: %v", res.Result, err)
		}
		return out
	}
	if r := result(form.SessionID); string(r.Answers) != `{"env":"prod","count":3,"ok":true}` || r.Via != "inbox" {
		t.Errorf("the form's result: %s via %q", r.Answers, r.Via)
	}
	if r := result(described.SessionID); strings.Join(r.SelectedOptions, ",") != "Postgres" || r.Via != "inbox" {
		t.Errorf("the described question's result: %v via %q", r.SelectedOptions, r.Via)
	}
}
