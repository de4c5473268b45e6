package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/serviceworker"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pushtest"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
)

// inboxSites: basic_auth on the person's paths (the inbox page, its API,
// socket and push endpoints), `login caddy` taking the person from it,
// the inbox, and push allowed to reach a push service on loopback (the
// test's local RFC 8030 receiver). The service worker, the manifest, the
// answer page and the one-tap endpoint need no sign-in.
func inboxSites(t *testing.T) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
http://127.0.0.1:{HTTP} {
	@person path /inbox /inbox/questions /inbox/questions/* /inbox/ws /inbox/push /login /login/*
	basic_auth @person {
		alice %s
	}
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		public_url http://127.0.0.1:{HTTP}
		login caddy
		inbox
		push {
			subject mailto:ops@example.com
			insecure_loopback_for_tests
		}
	}
}
`, hash)
}

var aliceBasic = "Basic " + b64("alice:alice-password")

// inboxTab opens /inbox signed in as alice (basic auth on every request
// of the tab), with notifications allowed for the site, and waits until
// the list has loaded.
func inboxTab(t *testing.T, c *Caddy) context.Context {
	t.Helper()
	tab := aliceTab(t, c)
	step(t, tab, "open the inbox", chromedp.Navigate(c.HTTP+"/inbox"))
	waitFor(t, tab, "the empty inbox", `!document.getElementById('open-empty').hidden`)
	return tab
}

// aliceTab is a tab that sends alice's basic auth with every request and
// may show notifications.
func aliceTab(t *testing.T, c *Caddy) context.Context {
	t.Helper()
	tab := newTab(t, newBrowser(t), device{name: "desktop", width: 1280, height: 900})
	if _, err := chromedp.Call(tab, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": aliceBasic}}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.CallBrowser(tab, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "notifications"}, Setting: browser.PermissionSettingGranted, Origin: c.HTTP}); err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestInboxLiveAnswer: signed in through Caddy's basic_auth, the person
// opens the inbox; a question an agent asks over MCP (a real MCP client,
// waiting on interactive_feedback) appears without a reload, with the
// count in the title; the person answers inline and the agent's waiting
// call gets that answer. The inbox passes axe-core.
func TestInboxLiveAnswer(t *testing.T) {
	c := startCaddy(t, inboxSites(t))
	tab := inboxTab(t, c)
	waitFor(t, tab, "the live socket", `document.getElementById('conn').textContent === 'Live'`)

	agent := runClient(t, "http", c.HTTP+"/mcp", "wait", token(t, "alice"))
	agent.expect("progress") // the question exists and the call waits
	waitFor(t, tab, "the question in the inbox", `document.querySelectorAll('#open li.card').length === 1`)
	if title := eval[string](t, tab, `document.title`); title != "(1) Inbox" {
		t.Errorf("title %q, want the open count in it", title)
	}
	if got := eval[string](t, tab, `document.querySelector('#open li.card .message').textContent`); !strings.Contains(got, "Which database?") {
		t.Fatalf("card shows %q", got)
	}
	checkAxe(t, tab, "inbox-open")
	screenshot(t, tab, "inbox-open")
	noXSS(t, tab, "inbox")

	step(t, tab, "answer inline",
		chromedp.Click(chromedp.CSS(`#open li.card input[value="sqlite"]`)),
		chromedp.Click(chromedp.CSS(`#open li.card button[type="submit"]`)))
	res := agent.expect("result")
	r := asResult(t, res)
	if r.IsError || r.Structured["status"] != "submitted" || !strings.Contains(r.Text, "sqlite") {
		t.Fatalf("the agent got %v", res)
	}
	agent.finish()
	waitFor(t, tab, "the question among the finished", `document.querySelectorAll('#done li.card').length === 1 && document.querySelectorAll('#open li.card').length === 0`)
	if title := eval[string](t, tab, `document.title`); title != "Inbox" {
		t.Errorf("title %q after the answer", title)
	}
	checkAxe(t, tab, "inbox-done")

	// Someone else's question never shows, and cannot be answered here.
	other, _ := createSession(t, c.Client, c.HTTP, token(t, "bob"), `{"message":"bob's question","predefinedOptions":["a","b"]}`)
	resp := do(t, c.Client, "POST", c.HTTP+"/inbox/questions/"+other.SessionID+"/answer", `{"selectedOptions":["a"]}`,
		"Authorization", aliceBasic, "Content-Type", "application/json")
	if resp.Status != 404 {
		t.Fatalf("alice answering bob's question: %d %s", resp.Status, resp.Body)
	}
	list := do(t, c.Client, "GET", c.HTTP+"/inbox/questions", "", "Authorization", aliceBasic)
	if strings.Contains(list.Body, other.SessionID) {
		t.Fatal("bob's question is in alice's inbox")
	}
}

// TestInboxPushServiceWorker: the real service worker the inbox
// registered gets a push message through the DevTools protocol
// (ServiceWorker.deliverPushMessage), the very payload the server sent to
// the device's push service (here a local RFC 8030 receiver that decrypts
// it with the device keys the test generated). The notification shows
// the question with one action per option; pressing an action posts the
// answer token and stores the answer exactly once; a question answered
// elsewhere gets a "close" push that closes its notification.
func TestInboxPushServiceWorker(t *testing.T) {
	c := startCaddy(t, inboxSites(t))
	var list struct {
		PushKey string `json:"pushKey"`
	}
	r := do(t, c.Client, "GET", c.HTTP+"/inbox/questions", "", "Authorization", aliceBasic)
	if err := json.Unmarshal([]byte(r.Body), &list); err != nil || list.PushKey == "" {
		t.Fatalf("no push key: %d %s", r.Status, r.Body)
	}
	recv, err := pushtest.NewReceiver(list.PushKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	dev, err := recv.NewDevice("alice-phone")
	if err != nil {
		t.Fatal(err)
	}
	sub := fmt.Sprintf(`{"endpoint":%q,"expirationTime":null,"keys":{"p256dh":%q,"auth":%q}}`, recv.Endpoint(dev), dev.Key, dev.Secret)
	if r := do(t, c.Client, "POST", c.HTTP+"/inbox/push", sub, "Authorization", aliceBasic, "Content-Type", "application/json"); r.Status != 201 {
		t.Fatalf("subscribing the device: %d %s", r.Status, r.Body)
	}

	tab := inboxTab(t, c)
	regs := make(chan serviceworker.RegistrationID, 8)
	if err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*serviceworker.EventWorkerRegistrationUpdated); ok {
			for _, reg := range e.Registrations {
				if !reg.IsDeleted && strings.HasSuffix(reg.ScopeURL, "/inbox") {
					select {
					case regs <- reg.RegistrationID:
					default:
					}
				}
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(tab, serviceworker.Enable, struct{}{}); err != nil {
		t.Fatal(err)
	}
	var regID serviceworker.RegistrationID
	select {
	case regID = <-regs:
	case <-time.After(20 * time.Second):
		t.Fatal("the inbox registered no service worker")
	}
	evalAwait[bool](t, tab, `navigator.serviceWorker.ready.then(function () { return true; })`)
	// A DevTools session on the worker: without one, headless Chromium
	// delivered the push to no running worker (nothing was shown); with
	// one the worker stays up, and its console and errors go to the test
	// log.
	sw := swContext(t, tab)
	if err := chromedp.Listen(sw, func(ev any) {
		switch e := ev.(type) {
		case *cdpruntime.EventConsoleAPICalled:
			for _, a := range e.Args {
				t.Logf("service worker console: %s", a.Value)
			}
		case *cdpruntime.EventExceptionThrown:
			t.Logf("service worker exception: %s %v", e.ExceptionDetails.Text, e.ExceptionDetails.Exception)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(sw, cdpruntime.Enable, struct{}{}); err != nil {
		t.Fatal(err)
	}
	// One round trip through the session: pushes delivered before it
	// was ready were lost now and then.
	if state := evalAwait[string](t, sw, `Promise.resolve(self.serviceWorker.state)`); state != "activated" {
		t.Fatalf("the inbox's service worker is %s, not activated", state)
	}

	nextPush := func() (notify.PushPayload, string) {
		t.Helper()
		m := recv.Next(t, 20*time.Second)
		var p notify.PushPayload
		if err := json.Unmarshal(m.Plain, &p); err != nil {
			t.Fatal(err)
		}
		return p, string(m.Plain)
	}
	deliver := func(data string) {
		t.Helper()
		if _, err := chromedp.Call(tab, serviceworker.DeliverPushMessage, serviceworker.DeliverPushMessageParams{Origin: c.HTTP, RegistrationID: regID, Data: data}); err != nil {
			t.Fatalf("delivering the push: %v", err)
		}
	}
	// deliverShown delivers a question's push until its notification is
	// listed. Headless Chromium now and then lists none after the worker's
	// showNotification resolved (its console says so); a push service
	// redelivers too, and the tag makes a second copy replace the first.
	// At most three deliveries.
	deliverShown := func(data, tag string) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			deliver(data)
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if evalAwait[bool](t, sw, `self.registration.getNotifications({tag: `+jsString(tag)+`}).then(function (ns) { return ns.length === 1; })`) {
					return
				}
				evalAwait[bool](t, sw, `new Promise(function (ok) { setTimeout(function () { ok(true); }, 100); })`)
			}
			if attempt == 3 {
				t.Fatalf("no notification tagged %s after %d deliveries", tag, attempt)
			}
			t.Logf("notification %s not listed after delivery %d; delivering again", tag, attempt)
		}
	}
	notifications := func(tag string) string {
		return evalAwait[string](t, tab, `navigator.serviceWorker.ready.then(function (r) { return r.getNotifications({tag: `+jsString(tag)+`}); }).then(function (ns) {
			return JSON.stringify(ns.map(function (n) { return {title: n.title, body: n.body, actions: (n.actions || []).map(function (a) { return a.title; })}; }));
		})`)
	}

	q, _ := createSession(t, c.Client, c.HTTP, token(t, "alice"), `{"message":"Deploy v2 to production?\nAll checks passed.","predefinedOptions":["yes","no"],"metadata":{"agent_name":"release-bot"}}`)
	p, raw := nextPush()
	if p.Type != "question" || p.ID != q.SessionID || len(p.Options) != 2 || p.Token == "" {
		t.Fatalf("push payload %s", raw)
	}
	deliverShown(raw, q.SessionID)
	if got := notifications(q.SessionID); got != `[{"title":"Deploy v2 to production?","body":"release-bot · ","actions":["yes","no"]}]` {
		t.Fatalf("notification %s", got)
	}

	// Press "no" on the notification. DevTools cannot press a
	// notification's button, so the test dispatches the same
	// notificationclick event in the worker itself (its waitUntil throws
	// for an event the browser did not make; the handler's fetch runs).
	clickAction(t, sw, q.SessionID, "option-1")
	var res Response
	if !eventually(20*time.Second, func() bool {
		res = do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+q.SessionID+"/result", "", "Authorization", "Bearer "+token(t, "alice"))
		return strings.Contains(res.Body, `"status":"submitted"`)
	}) {
		t.Fatalf("the action's answer was never stored: %s", res.Body)
	}
	if res.Status != 200 || !strings.Contains(res.Body, `"selectedOptions":["no"]`) || !strings.Contains(res.Body, `"via":"push"`) || !strings.Contains(res.Body, `"answeredBy":"alice"`) {
		t.Fatalf("stored result: %d %s", res.Status, res.Body)
	}
	// The "yes" button of the same notification, pressed late (a second
	// device): refused, the answer stays "no".
	b, _ := json.Marshal(map[string]string{"token": p.Token, "option": "yes"})
	if r := do(t, c.Client, "POST", p.AnswerURL, string(b), "Content-Type", "application/json"); r.Status != 409 {
		t.Fatalf("a second tap: %d %s", r.Status, r.Body)
	}
	// The worker confirms with a notification of its own (listed, like
	// the first one, not every time in headless Chromium: logged only).
	t.Logf("confirmation notification: %s", notifications(q.SessionID+":done"))
	if close, raw := nextPush(); close.Type != "close" || close.ID != q.SessionID {
		t.Fatalf("after the answer: %s", raw)
	}

	// A question answered elsewhere closes its notification.
	q2, capTok := createSession(t, c.Client, c.HTTP, token(t, "alice"), `{"message":"Rotate the keys?","predefinedOptions":["now","later"]}`)
	_, raw2 := nextPush()
	deliverShown(raw2, q2.SessionID)
	if r := do(t, c.Client, "POST", c.HTTP+"/feedback/"+q2.SessionID+"/submit",
		fmt.Sprintf(`{"token":%q,"answer":{"selectedOptions":["later"]}}`, capTok), "Content-Type", "application/json"); r.Status != 200 {
		t.Fatalf("answering on the page: %d %s", r.Status, r.Body)
	}
	closed, rawClose := nextPush()
	if closed.Type != "close" || closed.ID != q2.SessionID {
		t.Fatalf("close push %s", rawClose)
	}
	deliver(rawClose)
	waitPromise(t, tab, "the notification closed", `navigator.serviceWorker.ready.then(function (r) { return r.getNotifications({tag: `+jsString(q2.SessionID)+`}); }).then(function (ns) { return ns.length === 0; })`)
}

// swContext attaches to the inbox's service worker.
func swContext(t *testing.T, tab context.Context) context.Context {
	t.Helper()
	targets, err := chromedp.Targets(tab)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range targets {
		if ti.Type == "service_worker" && strings.HasSuffix(ti.URL, "/inbox/sw.js") {
			ctx, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(ti.TargetID))
			t.Cleanup(cancel)
			return ctx
		}
	}
	t.Fatal("no service worker target")
	return nil
}

// clickAction dispatches notificationclick with action in the service
// worker sw, for the notification tagged tag.
func clickAction(t *testing.T, sw context.Context, tag, action string) {
	t.Helper()
	got := evalAwait[string](t, sw, `self.registration.getNotifications({tag: `+jsString(tag)+`}).then(function (ns) {
		var out = [];
		ns.forEach(function (n) {
			try {
				out.push(String(self.dispatchEvent(new NotificationEvent('notificationclick', {notification: n, action: `+jsString(action)+`}))));
			} catch (e) {
				out.push('threw ' + e);
			}
		});
		return out.join(',');
	})`)
	if got != "true" {
		t.Fatalf("dispatching notificationclick to the notification tagged %s: %q", tag, got)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// evalAwait evaluates expr, a promise, and returns what it resolves to.
func evalAwait[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %.80s: %v", expr, err)
	}
	return v
}

// waitPromise re-evaluates expr, a promise of a boolean, until it resolves
// true, within a bounded deadline (what a service worker does happens
// outside the page, which has no event for it).
func waitPromise(t testing.TB, tab context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !evalAwait[bool](t, tab, expr) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s never held", what, expr)
		}
		<-tick.C
	}
}
