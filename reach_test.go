package mcpfeedback

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pushtest"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// reachRig is the module's question life with push and ntfy wired as
// Provision wires them, and the person's routes on a loopback server.
type reachRig struct {
	hub      *feedback.Hub
	core     *feedback.Service
	life     *lifecycle
	srv      *httptest.Server
	answered atomic.Int32
}

// pushPayload decodes what a device got.
func pushPayload(t *testing.T, m pushtest.Message) notify.PushPayload {
	t.Helper()
	var p notify.PushPayload
	if err := json.Unmarshal(m.Plain, &p); err != nil {
		t.Fatalf("push %q: %v", m.Plain, err)
	}
	return p
}

// pushReceiver is a local Web Push service (internal/pushtest: RFC 8030
// delivery, RFC 8291 decryption) that trusts the rig's VAPID key; it
// closes when the test ends.
func (r *reachRig) pushReceiver(t *testing.T) *pushtest.Receiver {
	t.Helper()
	keys, err := notify.LoadOrCreateVAPID(t.Context(), r.hub.Records())
	if err != nil {
		t.Fatal(err)
	}
	recv, err := pushtest.NewReceiver(keys.Public)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	return recv
}

func newReachRig(t *testing.T) *reachRig {
	t.Helper()
	hub := feedback.NewHub(store.NewMemory())
	t.Cleanup(func() { _ = hub.Close() })
	r := &reachRig{hub: hub, core: feedback.NewService(hub, feedback.Config{Limits: validate.DefaultLimits(), Retention: time.Hour})}
	r.life = newLifecycle(hub)
	t.Cleanup(r.life.close)
	t.Cleanup(hub.Subscribe(func(e feedback.Event) {
		if e.Kind == feedback.EventAnswered {
			r.answered.Add(1)
		}
	}))
	v, err := auth.NewVerifier([]byte(strings.Repeat("s", 32)), "", "")
	if err != nil {
		t.Fatal(err)
	}
	svc := handlers.New(handlers.Config{Core: r.core, Verifier: v, BaseURL: func(*http.Request) string { return r.srv.URL }})
	hp, err := handlers.NewHuman(svc, handlers.HumanConfig{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/feedback/{id}/quick", hp.Protect(handlers.Methods(hp.Quick, http.MethodPost)))
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *reachRig) reach(t *testing.T, h *Handler) {
	t.Helper()
	h.logger = zap.NewNop()
	rc, err := h.newReacher(t.Context(), &settings{publicURL: r.srv.URL}, r.core, r.hub.Records())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.close)
	r.life.reach.Store(rc)
}

func (r *reachRig) ask(t *testing.T, sub string, options ...string) *feedback.Asked {
	t.Helper()
	a, err := r.core.Ask(t.Context(), store.Owner{Subject: sub},
		&validate.CreateRequest{Message: "Deploy to production?\nAll checks passed.", PredefinedOptions: options, Timeout: 10 * time.Minute,
			Metadata: json.RawMessage(`{"agent_name":"release-bot"}`)}, r.srv.URL, feedback.Style{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// post sends what a notification's button sends: POST url with body.
func post(t *testing.T, url string, headers map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNtfyOneTapAnswer: the message reaches the ntfy server as its JSON
// publishing API documents it (POST to the server root, topic in the
// body, bearer token, http actions with method/headers/body/clear, a view
// action), and performing a button's request answers the question
// exactly once. The receiver is an httptest server playing ntfy: no ntfy
// server can run here (notes E).
func TestNtfyOneTapAnswer(t *testing.T) {
	r := newReachRig(t)
	got := make(chan *http.Request, 4)
	bodies := make(chan []byte, 4)
	ntfy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		got <- req
		bodies <- b
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"x","event":"message"}`))
	}))
	defer ntfy.Close()
	t.Setenv("NTFY_TOKEN", "tk_testtoken")
	r.reach(t, &Handler{Ntfy: []NtfyConfig{{URL: ntfy.URL + "/mcp-alice", Token: "{env.NTFY_TOKEN}"}}})
	a := r.ask(t, "alice", "yes", "no")

	var req *http.Request
	select {
	case req = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing published to ntfy")
	}
	body := <-bodies
	if req.Method != http.MethodPost || req.URL.Path != "/" || req.Header.Get("Content-Type") != "application/json" ||
		req.Header.Get("Authorization") != "Bearer tk_testtoken" {
		t.Fatalf("published %s %s, Content-Type %q, Authorization %q", req.Method, req.URL.Path, req.Header.Get("Content-Type"), req.Header.Get("Authorization"))
	}
	var msg notify.NtfyMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&msg); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if msg.Topic != "mcp-alice" || msg.Markdown || msg.Click != a.Link || !strings.Contains(msg.Message, "Deploy to production?") || msg.Title != "release-bot asks" {
		t.Fatalf("message %+v", msg)
	}
	if len(msg.Actions) != 3 || msg.Actions[2].Action != "view" || msg.Actions[2].URL != a.Link {
		t.Fatalf("actions %+v, want yes, no, view", msg.Actions)
	}
	_, capToken, _ := strings.Cut(a.Link, "#t=")
	for i, opt := range []string{"yes", "no"} {
		act := msg.Actions[i]
		if act.Action != "http" || act.Label != opt || act.Method != "POST" || !act.Clear || act.Headers["Content-Type"] != "application/json" ||
			act.URL != r.srv.URL+"/feedback/"+a.Session.ID+"/quick" {
			t.Fatalf("action %d: %+v", i, act)
		}
		if strings.Contains(act.URL, "?") || strings.Contains(act.Body, capToken) {
			t.Fatalf("action %d carries a token in its URL or the capability token: %+v", i, act)
		}
	}

	// The phone performs the "no" button's request, and (a flaky network)
	// again; then someone taps "yes" on a second phone.
	for range 2 {
		if code, resp := post(t, msg.Actions[1].URL, msg.Actions[1].Headers, msg.Actions[1].Body); code != 200 {
			t.Fatalf("the no button: %d %s", code, resp)
		}
	}
	if code, _ := post(t, msg.Actions[0].URL, msg.Actions[0].Headers, msg.Actions[0].Body); code != http.StatusConflict {
		t.Fatalf("the yes button after no: %d, want 409", code)
	}
	s, err := r.core.Get(t.Context(), a.Session.Owner, a.Session.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != store.StatusSubmitted || strings.Join(s.Result.SelectedOptions, ",") != "no" || s.Result.Via != feedback.ViaNtfy {
		t.Fatalf("stored %s %+v", s.Status, s.Result)
	}
	if n := r.answered.Load(); n != 1 {
		t.Fatalf("%d answered events, want exactly 1", n)
	}
}

// TestPushOneTapAnswerAndClose: a new question reaches the person's
// device encrypted and VAPID-signed, with its first line, the agent's
// name, a button per option and an answer token; the service worker's
// post of that token answers it once; the answer closes the notification
// with a "close" push. Questions of others do not reach the device.
func TestPushOneTapAnswerAndClose(t *testing.T) {
	r := newReachRig(t)
	recv := r.pushReceiver(t)
	r.reach(t, &Handler{Push: &PushConfig{Subject: "mailto:ops@example.com", InsecureLoopbackForTests: true}})
	dev, err := recv.NewDevice("alice-phone")
	if err != nil {
		t.Fatal(err)
	}
	var sub notify.PushSubscription
	sub.Endpoint, sub.Keys.P256dh, sub.Keys.Auth = recv.Endpoint(dev), dev.Key, dev.Secret
	if _, err := (notify.Subscriptions{KV: r.hub.Records()}).Add(t.Context(), "alice", sub); err != nil {
		t.Fatal(err)
	}
	r.ask(t, "bob", "yes", "no") // not alice's: never reaches her phone
	a := r.ask(t, "alice", "yes", "no")

	next := func() notify.PushPayload {
		t.Helper()
		return pushPayload(t, recv.Next(t, 10*time.Second))
	}
	p := next()
	if p.Type != "question" || p.ID != a.Session.ID || p.Title != "Deploy to production?" || p.Agent != "release-bot" || p.URL != a.Link ||
		strings.Join(p.Options, ",") != "yes,no" || p.Token == "" || p.AnswerURL != r.srv.URL+"/feedback/"+a.Session.ID+"/quick" {
		t.Fatalf("payload %+v", p)
	}
	// What the service worker posts on the "yes" action.
	b, _ := json.Marshal(map[string]string{"token": p.Token, "option": "yes"})
	if code, resp := post(t, p.AnswerURL, map[string]string{"Content-Type": "application/json"}, string(b)); code != 200 {
		t.Fatalf("quick answer: %d %s", code, resp)
	}
	s, err := r.core.Get(t.Context(), a.Session.Owner, a.Session.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Result == nil || s.Result.Via != feedback.ViaPush || s.Result.AnsweredBy != "alice" || strings.Join(s.Result.SelectedOptions, ",") != "yes" {
		t.Fatalf("stored %+v", s.Result)
	}
	if c := next(); c.Type != "close" || c.ID != a.Session.ID || c.Status != "submitted" {
		t.Fatalf("after the answer: %+v, want a close", c)
	}
	if n := r.answered.Load(); n != 1 {
		t.Fatalf("%d answered events", n)
	}
}

// TestPushHangingServiceNeverSlowsCreate: with the push service holding
// every request open, questions are still created: Ask only queues.
func TestPushHangingServiceNeverSlowsCreate(t *testing.T) {
	r := newReachRig(t)
	recv := r.pushReceiver(t)
	release := make(chan struct{})
	defer close(release)
	recv.Respond(func(string, int) (int, http.Header) { <-release; return 0, nil })
	r.reach(t, &Handler{Push: &PushConfig{Subject: "mailto:ops@example.com", InsecureLoopbackForTests: true}})
	dev, _ := recv.NewDevice("phone")
	var sub notify.PushSubscription
	sub.Endpoint, sub.Keys.P256dh, sub.Keys.Auth = recv.Endpoint(dev), dev.Key, dev.Secret
	if _, err := (notify.Subscriptions{KV: r.hub.Records()}).Add(t.Context(), "alice", sub); err != nil {
		t.Fatal(err)
	}
	r.ask(t, "alice", "yes", "no")
	<-recv.Hits // the push service now holds a request open
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			r.ask(t, "alice", "yes", "no")
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("creates waited for the hanging push service")
	}
}

func TestPushNtfyCaddyfile(t *testing.T) {
	in := "mcp_feedback {\n push {\n vapid_private_key {env.K}\n vapid_public_key BPub\n subject mailto:ops@example.com\n }\n notify ntfy https://ntfy.example/alice {\n token {env.NTFY_TOKEN}\n }\n}"
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if h.Push == nil || h.Push.VAPIDPrivateKey != "{env.K}" || h.Push.Subject != "mailto:ops@example.com" || len(h.Ntfy) != 1 || h.Ntfy[0].Token != "{env.NTFY_TOKEN}" {
		t.Fatalf("parsed %+v %+v", h.Push, h.Ntfy)
	}
	for in, want := range map[string]string{
		"mcp_feedback {\n push x\n}":                                         "no arguments",
		"mcp_feedback {\n push {\n vapid_key x\n }\n}":                       "unknown push option",
		"mcp_feedback {\n notify ntfy\n}":                                    "needs a topic URL",
		"mcp_feedback {\n notify ntfy https://n/t {\n password x\n }\n}":     "unknown notify ntfy option",
		"mcp_feedback {\n notify ntfy https://n/t extra\n}":                  "wrong argument count",
		"mcp_feedback {\n push {\n subject\n }\n}":                           "needs a value",
		"mcp_feedback {\n push {\n insecure_loopback_for_tests yes\n }\n}":   "wrong argument count",
		"mcp_feedback {\n push {\n subject a b\n }\n}":                       "one value",
		"mcp_feedback {\n notify ntfy https://n/t {\n token a b\n }\n}":      "one value",
		"mcp_feedback {\n notify ntfy https://n/t {\n token\n }\n}":          "needs a value",
		"mcp_feedback {\n notify smoke https://n/t\n}":                       "notify ntfy <topic-url>",
		"mcp_feedback {\n push {\n vapid_public_key a\n subject\n }\n}":      "needs a value",
		"mcp_feedback {\n notify ntfy https://n/t {\n token a\n }\n push\n}": "",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// TestReachConfigRefusals: what Provision refuses, each saying why.
func TestReachConfigRefusals(t *testing.T) {
	r := newReachRig(t)
	other, _ := notify.LoadOrCreateVAPID(t.Context(), store.NewMemory())
	mine, _ := notify.LoadOrCreateVAPID(t.Context(), store.NewMemory())
	for _, c := range []struct {
		name string
		h    Handler
		base string
		want string
	}{
		{"no public_url", Handler{Ntfy: []NtfyConfig{{URL: "https://ntfy.sh/x"}}}, "", "public_url is required"},
		{"no subject", Handler{Push: &PushConfig{}}, r.srv.URL, "subject must be"},
		{"subject without mailto", Handler{Push: &PushConfig{Subject: "ops@example.com"}}, r.srv.URL, "subject must be"},
		{"half a key pair", Handler{Push: &PushConfig{Subject: "mailto:a@example.com", VAPIDPrivateKey: mine.Private}}, r.srv.URL, "both"},
		{"halves of two pairs", Handler{Push: &PushConfig{Subject: "mailto:a@example.com", VAPIDPrivateKey: mine.Private, VAPIDPublicKey: other.Public}}, r.srv.URL, "not the public half"},
		{"garbage key", Handler{Push: &PushConfig{Subject: "mailto:a@example.com", VAPIDPrivateKey: "!!", VAPIDPublicKey: other.Public}}, r.srv.URL, "vapid_private_key"},
		{"ntfy without topic", Handler{Ntfy: []NtfyConfig{{URL: "https://ntfy.sh/"}}}, r.srv.URL, "topic name"},
		{"ntfy with credentials", Handler{Ntfy: []NtfyConfig{{URL: "https://u:p@ntfy.sh/x"}}}, r.srv.URL, "without credentials"},
		{"ntfy ftp", Handler{Ntfy: []NtfyConfig{{URL: "ftp://ntfy.sh/x"}}}, r.srv.URL, "http(s) URL"},
		{"ntfy auth in query", Handler{Ntfy: []NtfyConfig{{URL: "https://ntfy.sh/x?auth=abc"}}}, r.srv.URL, "query"},
	} {
		h := c.h
		h.logger = zap.NewNop()
		rc, err := h.newReacher(t.Context(), &settings{publicURL: c.base}, r.core, r.hub.Records())
		if err == nil {
			rc.close()
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestPushAddressed: a question addressed to bob (`to`) reaches the
// owner's and bob's devices, each with its own answer token; bob's tap
// answers as bob; the close goes to both.
func TestPushAddressed(t *testing.T) {
	r := newReachRig(t)
	r.core = feedback.NewService(r.hub, feedback.Config{Limits: validate.DefaultLimits(), Retention: time.Hour, IndexByOwner: true})
	recv := r.pushReceiver(t)
	r.reach(t, &Handler{Push: &PushConfig{Subject: "mailto:ops@example.com", InsecureLoopbackForTests: true}})
	for _, who := range []string{"alice", "bob", "carol"} {
		dev, err := recv.NewDevice(who + "-phone")
		if err != nil {
			t.Fatal(err)
		}
		var sub notify.PushSubscription
		sub.Endpoint, sub.Keys.P256dh, sub.Keys.Auth = recv.Endpoint(dev), dev.Key, dev.Secret
		if _, err := (notify.Subscriptions{KV: r.hub.Records()}).Add(t.Context(), who, sub); err != nil {
			t.Fatal(err)
		}
	}
	a, err := r.core.Ask(t.Context(), store.Owner{Subject: "alice"},
		&validate.CreateRequest{Message: "Merge the release branch?", PredefinedOptions: []string{"yes", "no"}, Timeout: 10 * time.Minute, To: []string{"bob"}},
		r.srv.URL, feedback.Style{})
	if err != nil {
		t.Fatal(err)
	}
	// next returns the next n pushes by device.
	next := func(n int) map[string]notify.PushPayload {
		t.Helper()
		out := map[string]notify.PushPayload{}
		for range n {
			m := recv.Next(t, 10*time.Second)
			if _, dup := out[m.Device]; dup {
				t.Fatalf("two pushes to %s", m.Device)
			}
			out[m.Device] = pushPayload(t, m)
		}
		return out
	}
	asked := next(2)
	al, bo := asked["alice-phone"], asked["bob-phone"]
	if al.ID != a.Session.ID || bo.ID != a.Session.ID || al.Token == "" || bo.Token == "" || al.Token == bo.Token {
		t.Fatalf("pushes %+v", asked)
	}
	b, _ := json.Marshal(map[string]string{"token": bo.Token, "option": "no"})
	if code, resp := post(t, bo.AnswerURL, map[string]string{"Content-Type": "application/json"}, string(b)); code != 200 {
		t.Fatalf("bob's tap: %d %s", code, resp)
	}
	s, err := r.core.Get(t.Context(), a.Session.Owner, a.Session.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Result == nil || s.Result.AnsweredBy != "bob" || s.Result.Via != feedback.ViaPush {
		t.Fatalf("stored %+v", s.Result)
	}
	closed := next(2)
	if closed["alice-phone"].Type != "close" || closed["bob-phone"].Type != "close" {
		t.Fatalf("closes %+v", closed)
	}
	// carol, not addressed, got nothing: the pushes of the create and of
	// the close were alice's and bob's, and none is left queued at the
	// receiver. (A push to carol would be sent with the others of the
	// create, so would most likely have taken the place of one of them.)
	select {
	case m := <-recv.Messages:
		t.Fatalf("an extra push to %s", m.Device)
	default:
	}
}
