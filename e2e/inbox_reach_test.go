package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// reachSites: one instance of a deployment on the shared Redis url, with
// alice, bob and carol behind basic_auth and `login caddy`, the inbox and,
// when addressing is true, allow_addressing. Each instance has its own
// port and public URL; what they share is the store.
func reachSites(t *testing.T, url string, addressing bool) string {
	t.Helper()
	users := ""
	for _, who := range []string{"alice", "bob", "carol"} {
		hash, err := bcrypt.GenerateFromPassword([]byte(who+"-password"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		users += fmt.Sprintf("\t\t%s %s\n", who, hash)
	}
	extra := ""
	if addressing {
		extra = "\t\tallow_addressing\n"
	}
	return `
http://127.0.0.1:{HTTP} {
	@person path /inbox /inbox/questions /inbox/questions/* /inbox/ws /inbox/push /login /login/*
	basic_auth @person {
` + users + `	}
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		public_url http://127.0.0.1:{HTTP}
		store redis ` + url + ` {
			key_prefix e2e:
		}
		login caddy
		inbox
` + extra + `	}
}
`
}

func basicFor(who string) string { return "Basic " + b64(who+":"+who+"-password") }

// noFallbackRefresh runs before the inbox's own script and drops every
// timer of 5 s or more: the 20 s refresh and the 5 s polling. What the
// page then shows of another instance's questions can only have come
// through its WebSocket.
const noFallbackRefresh = `(function () {
	var si = window.setInterval;
	window.setInterval = function (fn, ms) {
		if (ms >= 5000) { return 0; }
		return si.apply(window, arguments);
	};
})();`

// TestInboxAcrossInstances: two Caddy instances on one real Redis. Alice
// has her inbox open in headless Chromium on instance B, with the page's
// fallback refresh and polling switched off. An agent asks her over MCP
// (the TS SDK, waiting on interactive_feedback) on instance A: the
// question appears on B's page without a reload; she answers it inline
// there and the waiting call on A gets the answer. A second question is
// addressed to bob as well (`to`): bob finds it in his inbox (on A) and
// answers it, the agent gets answeredBy bob and alice's page on B moves
// it to the finished ones live; carol, not addressed, gets 404 for it.
// Then the hostile inputs of `to`.
func TestInboxAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	a := startCaddy(t, reachSites(t, rs.URL(), true))
	b := startCaddy(t, reachSites(t, rs.URL(), false))

	tab := liveInbox(t, b, "alice")
	// 1. Asked on A, shown live on B, answered there.
	agent := runClient(t, "http", a.HTTP+"/mcp", "wait", token(t, "alice"))
	agent.expect("progress")
	waitFor(t, tab, "A's question in B's inbox", `document.querySelectorAll('#open li.card').length === 1`)
	if got := eval[string](t, tab, `document.querySelector('#open li.card .message').textContent`); !strings.Contains(got, "Which database?") {
		t.Fatalf("card shows %q", got)
	}
	step(t, tab, "answer inline on B",
		chromedp.Click(chromedp.CSS(`#open li.card input[value="sqlite"]`)),
		chromedp.Click(chromedp.CSS(`#open li.card button[type="submit"]`)))
	r := asResult(t, agent.expect("result"))
	if r.IsError || r.Structured["status"] != "submitted" || !strings.Contains(r.Text, "sqlite") || answeredBy(r) != "alice" {
		t.Fatalf("the agent on A got %+v", r)
	}
	agent.finish()
	waitFor(t, tab, "the answered question among the finished", `document.querySelectorAll('#done li.card').length === 1 && document.querySelectorAll('#open li.card').length === 0`)

	// 2. Addressed to bob too: he sees it in his inbox (on A) and answers
	// there; carol cannot.
	bobTab := liveInbox(t, a, "bob")
	agent = runScript(t, "client.mjs", "http", a.HTTP+"/mcp", "wait", token(t, "alice"), "MCP_TO=bob")
	link := linkIn(t, agent.expect("progress")["message"].(string))
	id := strings.TrimPrefix(strings.SplitN(link, "#", 2)[0], a.HTTP+"/feedback/")
	waitFor(t, tab, "the addressed question in alice's inbox on B", `document.querySelectorAll('#open li.card').length === 1`)
	if n := eval[int](t, tab, `document.querySelectorAll('#open li.card .on-behalf').length`); n != 0 {
		t.Fatalf("alice's own question is shown as someone else's (%d)", n)
	}

	var bobs struct {
		Questions []struct {
			SessionID string `json:"sessionId"`
			Status    string `json:"status"`
			For       string `json:"for"`
		} `json:"questions"`
	}
	list := do(t, a.Client, "GET", a.HTTP+"/inbox/questions", "", "Authorization", basicFor("bob"))
	if err := json.Unmarshal([]byte(list.Body), &bobs); err != nil || len(bobs.Questions) != 1 || bobs.Questions[0].SessionID != id ||
		bobs.Questions[0].Status != "pending" || bobs.Questions[0].For != "alice" {
		t.Fatalf("bob's inbox: %d %s (%v)", list.Status, list.Body, err)
	}
	for _, c := range []*Caddy{a, b} {
		if l := do(t, c.Client, "GET", c.HTTP+"/inbox/questions", "", "Authorization", basicFor("carol")); l.Status != 200 || strings.Contains(l.Body, id) {
			t.Fatalf("carol's inbox: %d %s", l.Status, l.Body)
		}
		if resp := do(t, c.Client, "POST", c.HTTP+"/inbox/questions/"+id+"/answer", `{"selectedOptions":["sqlite"]}`,
			"Authorization", basicFor("carol"), "Content-Type", "application/json"); resp.Status != 404 {
			t.Fatalf("carol answering: %d %s, want 404 as for no question", resp.Status, resp.Body)
		}
	}
	waitFor(t, bobTab, "the question in bob's inbox", `document.querySelectorAll('#open li.card').length === 1`)
	if got := eval[string](t, bobTab, `document.querySelector('#open li.card .on-behalf').textContent`); got != "Asked for alice, addressed to you too" {
		t.Fatalf("bob's card says %q", got)
	}
	checkAxe(t, bobTab, "inbox-addressed")
	screenshot(t, bobTab, "inbox-addressed")
	step(t, bobTab, "bob answers inline on A",
		chromedp.Click(chromedp.CSS(`#open li.card input[value="postgres"]`)),
		chromedp.Click(chromedp.CSS(`#open li.card button[type="submit"]`)))
	r = asResult(t, agent.expect("result"))
	if r.IsError || r.Structured["status"] != "submitted" || !strings.Contains(r.Text, "postgres") || answeredBy(r) != "bob" {
		t.Fatalf("the agent got %+v", r)
	}
	agent.finish()
	waitFor(t, tab, "bob's answer reaching alice's page on B", `document.querySelectorAll('#done li.card').length === 2 && document.querySelectorAll('#open li.card').length === 0`)
	// The log names who answered, never the answer.
	a.waitLog(t, `"session submitted"`, `"session":"`+id+`"`, `"answered_by":"bob"`)
	for line := range strings.SplitSeq(a.logs.String(), "\n") {
		if strings.Contains(line, id) && strings.Contains(line, "postgres") {
			t.Fatalf("a log line holds the answer: %s", line)
		}
	}

	// 3. Hostile `to`: every refusal a 400 that says what was wrong.
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = fmt.Sprintf(`"p%d"`, i)
	}
	for _, c := range []struct {
		name string
		site *Caddy
		to   string
		want string
	}{
		{"not allowed on B", b, `["bob"]`, "allow_addressing"},
		{"too many", a, "[" + strings.Join(eleven, ",") + "]", "the limit is 10"},
		{"duplicates", a, `["bob","bob"]`, "repeats"},
		{"empty id", a, `[""]`, "must not be empty"},
		{"control character", a, `["bo\u0000b"]`, "control character"},
		{"surrounding spaces", a, `["bob "]`, "spaces"},
		{"too long", a, `["` + strings.Repeat("b", 256) + `"]`, "at most 255"},
		{"not a list", a, `"bob"`, "must be an array"},
		{"an object", a, `{"0":"bob"}`, "must be an array"},
		{"a number in it", a, `[42]`, "must be a string"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := do(t, c.site.Client, "POST", c.site.HTTP+"/api/feedback/create", `{"message":"m","to":`+c.to+`}`,
				"Authorization", "Bearer "+token(t, "alice"), "Content-Type", "application/json")
			if resp.Status != 400 || !strings.Contains(resp.Body, c.want) {
				t.Fatalf("%d %s, want 400 saying %q", resp.Status, resp.Body, c.want)
			}
		})
	}
}

// liveInbox opens who's inbox on instance c in a browser of its own (its
// own sign-in), with the page's fallback refresh and polling switched off
// (noFallbackRefresh), and waits until its socket is up.
func liveInbox(t *testing.T, c *Caddy, who string) context.Context {
	t.Helper()
	tab := newTab(t, newBrowser(t), device{name: "desktop", width: 1280, height: 900})
	if _, err := chromedp.Call(tab, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": basicFor(who)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: noFallbackRefresh}); err != nil {
		t.Fatal(err)
	}
	step(t, tab, "open "+who+"'s inbox", chromedp.Navigate(c.HTTP+"/inbox"))
	waitFor(t, tab, who+"'s empty inbox", `!document.getElementById('open-empty').hidden`)
	waitFor(t, tab, who+"'s live socket", `document.getElementById('conn').textContent === 'Live'`)
	return tab
}

// answeredBy is the result's answeredBy in a tool result's structured content.
func answeredBy(r toolResult) string {
	res, _ := r.Structured["result"].(map[string]any)
	s, _ := res["answeredBy"].(string)
	return s
}
