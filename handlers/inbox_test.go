package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pushtest"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// headerLogin is a Login for handler tests: the person is the X-Test-Person
// header; "broken" stands for a sign-in store that is down. The real
// modes (login caddy, oidc) are tested in package login and e2e.
type headerLogin struct{}

func (headerLogin) Person(r *http.Request) (identity.Person, error) {
	switch p := r.Header.Get("X-Test-Person"); p {
	case "":
		return identity.Person{}, identity.ErrNotSignedIn
	case "broken":
		return identity.Person{}, fmt.Errorf("session store: %w", store.ErrUnavailable)
	default:
		return identity.Person{ID: p, Name: strings.ToUpper(p)}, nil
	}
}
func (headerLogin) SignIn(w http.ResponseWriter, r *http.Request, back string) {
	http.Redirect(w, r, "/login?back="+back, http.StatusFound)
}
func (headerLogin) Routes() map[string]http.Handler { return nil }
func (headerLogin) Close(context.Context) error     { return nil }

type inboxServer struct {
	*humanServer
	in   *Inbox
	push *notify.Pusher
}

func newInboxServer(t *testing.T, tweak ...func(*feedback.Config)) *inboxServer {
	t.Helper()
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	cfg := feedback.Config{IndexByOwner: true}
	for _, f := range tweak {
		f(&cfg)
	}
	svc := newServiceWith(t, st, cfg)
	hp, err := NewHuman(svc, HumanConfig{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := notify.LoadOrCreateVAPID(t.Context(), st)
	if err != nil {
		t.Fatal(err)
	}
	push := notify.NewPusher(notify.PushOptions{Keys: keys, Subject: "ops@example.com", Subs: notify.Subscriptions{KV: st}})
	t.Cleanup(push.Close)
	in, err := NewInbox(hp, InboxConfig{Login: headerLogin{}, Push: push, AllowLoopbackPush: true, MaxSocketsPerPerson: 2})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/feedback/create", Methods(svc.Create, http.MethodPost))
	for p, h := range in.Routes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		in.Stop(true)
		srv.Close()
	})
	return &inboxServer{humanServer: &humanServer{svc: svc, hp: hp, srv: srv, st: st}, in: in, push: push}
}

// TestInboxHostileInput: every inbox endpoint refuses what it must with a
// 4xx that says why, shows a person only their own questions (someone
// else's is the same 404 as none), and stores an inline answer once.
func TestInboxHostileInput(t *testing.T) {
	s := newInboxServer(t)
	mine, _ := create(t, s.svc, mint(t, "alice"), `{"message":"Ship **it**?","predefinedOptions":["yes","no"],"metadata":{"agent_name":"release-bot"}}`)
	bobs, _ := create(t, s.svc, mint(t, "bob"), `{"message":"bob's","predefinedOptions":["yes","no"]}`)
	const js = "application/json"
	answer := `{"selectedOptions":["yes"],"nonce":"n1"}`
	for _, c := range []struct {
		name, method, path, person, ctype, body string
		status                                  int
		want                                    string
	}{
		{"list signed out", "GET", "/inbox/questions", "", "", "", 401, "sign in"},
		{"list store down", "GET", "/inbox/questions", "broken", "", "", 503, "could not be checked"},
		{"page signed out redirects to sign-in", "GET", "/inbox", "", "", "", 302, ""},
		{"answer signed out", "POST", "/inbox/questions/" + mine + "/answer", "", js, answer, 401, "sign in"},
		{"answer someone else's", "POST", "/inbox/questions/" + bobs + "/answer", "alice", js, answer, 404, "no session"},
		{"answer unknown", "POST", "/inbox/questions/" + uuidUnknown + "/answer", "alice", js, answer, 404, "no session"},
		{"answer malformed id", "POST", "/inbox/questions/%3Cscript%3E/answer", "alice", js, answer, 404, "no session"},
		{"answer not json", "POST", "/inbox/questions/" + mine + "/answer", "alice", "text/plain", answer, 415, "application/json"},
		{"answer garbage", "POST", "/inbox/questions/" + mine + "/answer", "alice", js, `{"selectedOptions":`, 400, ""},
		{"answer unknown option", "POST", "/inbox/questions/" + mine + "/answer", "alice", js, `{"selectedOptions":["maybe"]}`, 400, "not one of the offered options"},
		{"answer two on single choice", "POST", "/inbox/questions/" + mine + "/answer", "alice", js, `{"selectedOptions":["yes","no"]}`, 400, "only one option"},
		{"answer huge", "POST", "/inbox/questions/" + mine + "/answer", "alice", js, `{"freeText":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "64 KiB"},
		{"answer cross-site", "POST", "/inbox/questions/" + mine + "/answer", "alice", js, answer, 403, ""},
		{"answer with GET", "GET", "/inbox/questions/" + mine + "/answer", "alice", "", "", 405, ""},
		{"unknown inbox path", "GET", "/inbox/secrets", "alice", "", "", 404, ""},
		{"push signed out", "POST", "/inbox/push", "", js, `{}`, 401, "sign in"},
		{"push not json", "POST", "/inbox/push", "alice", js, `[1]`, 400, "PushSubscription"},
		{"push http endpoint", "POST", "/inbox/push", "alice", js, `{"endpoint":"http://push.example/x","keys":{"p256dh":"x","auth":"y"}}`, 400, "https"},
		{"push private address", "POST", "/inbox/push", "alice", js, `{"endpoint":"http://10.0.0.1/x","keys":{"p256dh":"x","auth":"y"}}`, 400, "https"},
		{"push bad keys", "POST", "/inbox/push", "alice", js, `{"endpoint":"https://push.example/x","keys":{"p256dh":"AAAA","auth":"y"}}`, 400, "p256dh"},
		{"push cross-site", "POST", "/inbox/push", "alice", js, `{}`, 403, ""},
		{"unsubscribe without endpoint", "DELETE", "/inbox/push", "alice", js, `{}`, 400, "endpoint"},
		{"unsubscribe unknown is fine", "DELETE", "/inbox/push", "alice", js, `{"endpoint":"https://push.example/never"}`, 204, ""},
		{"push with PUT", "PUT", "/inbox/push", "alice", js, `{}`, 405, ""},
	} {
		hdr := []string{"Content-Type", c.ctype, "X-Test-Person", c.person}
		if strings.HasSuffix(c.name, "cross-site") {
			hdr = append(hdr, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		}
		req, _ := http.NewRequestWithContext(t.Context(), c.method, s.srv.URL+c.path, strings.NewReader(c.body))
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i+1] != "" {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = fmt.Fprint(&b, readAll(resp))
		if resp.StatusCode != c.status || !strings.Contains(b.String(), c.want) {
			t.Errorf("%s: %d %.200s, want %d with %q", c.name, resp.StatusCode, b.String(), c.status, c.want)
		}
	}

	// Alice sees her question only, rendered as on the answer page.
	resp, body := s.req(t, "GET", "/inbox/questions", "", "X-Test-Person", "alice")
	var list InboxList
	if err := json.Unmarshal([]byte(body), &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if len(list.Questions) != 1 || list.Questions[0].SessionID != mine || list.Questions[0].Agent != "release-bot" ||
		!strings.Contains(list.Questions[0].MessageHTML, "<strong>it</strong>") || list.PushKey == "" || list.Person.ID != "alice" {
		t.Fatalf("alice's inbox: %+v", list)
	}
	// Her answer, twice (a retry), is one answer, recorded as hers.
	for range 2 {
		if resp, body := s.req(t, "POST", "/inbox/questions/"+mine+"/answer", answer, "Content-Type", js, "X-Test-Person", "alice"); resp.StatusCode != 200 {
			t.Fatalf("answer: %d %s", resp.StatusCode, body)
		}
	}
	if resp, _ := s.req(t, "POST", "/inbox/questions/"+mine+"/answer", `{"selectedOptions":["no"],"nonce":"n2"}`, "Content-Type", js, "X-Test-Person", "alice"); resp.StatusCode != 409 {
		t.Fatalf("a second, different answer: %d, want 409", resp.StatusCode)
	}
	got, err := s.svc.core.Get(t.Context(), store.Owner{Subject: "alice"}, mine)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result.Via != feedback.ViaInbox || got.Result.AnsweredBy != "alice" {
		t.Fatalf("stored via %q by %q", got.Result.Via, got.Result.AnsweredBy)
	}
	if b, _ := s.svc.core.Get(t.Context(), store.Owner{Subject: "bob"}, bobs); b.Status != store.StatusPending {
		t.Fatal("bob's question changed")
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestInboxPushSubscription: a device's subscription is stored for the
// signed-in person and the push sender reaches it; DELETE removes it.
func TestInboxPushSubscription(t *testing.T) {
	s := newInboxServer(t)
	recv, err := pushtest.NewReceiver(s.push.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	dev, _ := recv.NewDevice("phone")
	sub := fmt.Sprintf(`{"endpoint":%q,"expirationTime":null,"keys":{"p256dh":%q,"auth":%q}}`, recv.Endpoint(dev), dev.Key, dev.Secret)
	if resp, body := s.req(t, "POST", "/inbox/push", sub, "Content-Type", "application/json", "X-Test-Person", "alice"); resp.StatusCode != 201 {
		t.Fatalf("subscribe: %d %s", resp.StatusCode, body)
	}
	subs, err := s.push.Subscriptions().List(t.Context(), "alice")
	if err != nil || len(subs) != 1 {
		t.Fatalf("alice's subscriptions: %v %v", subs, err)
	}
	if others, _ := s.push.Subscriptions().List(t.Context(), "bob"); len(others) != 0 {
		t.Fatal("bob got alice's device")
	}
	body := fmt.Sprintf(`{"endpoint":%q}`, recv.Endpoint(dev))
	if resp, _ := s.req(t, "DELETE", "/inbox/push", body, "Content-Type", "application/json", "X-Test-Person", "alice"); resp.StatusCode != 204 {
		t.Fatalf("unsubscribe: %d", resp.StatusCode)
	}
	if subs, _ := s.push.Subscriptions().List(t.Context(), "alice"); len(subs) != 0 {
		t.Fatalf("still subscribed: %v", subs)
	}
}

// TestInboxSocket: the socket tells alice when her questions change, and
// refuses another origin and a third socket. (That others' questions do
// not wake her is feedback's TestAddressedInbox.)
func TestInboxSocket(t *testing.T) {
	s := newInboxServer(t)
	wsURL := "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/inbox/ws"
	dial := func(person, origin string) (*websocket.Conn, *http.Response, error) {
		h := http.Header{"X-Test-Person": {person}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return websocket.Dial(t.Context(), wsURL, &websocket.DialOptions{HTTPHeader: h})
	}
	if _, resp, err := dial("alice", "https://evil.example"); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("another origin: %v", err)
	}
	if _, resp, err := dial("", ""); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("signed out: %v", err)
	}
	c, _, err := dial("alice", s.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read := func() map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		_ = json.Unmarshal(b, &m)
		return m
	}
	if m := read(); m["type"] != "ready" {
		t.Fatalf("first message %v", m)
	}
	second, _, err := dial("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	defer second.CloseNow()
	if _, resp, err := dial("alice", ""); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("a third socket: %v", err)
	}
	create(t, s.svc, mint(t, "bob"), `{"message":"not for alice"}`)
	create(t, s.svc, mint(t, "alice"), `{"message":"for alice"}`)
	if m := read(); len(m) != 1 || m["type"] != "changed" {
		t.Fatalf("got %v, want a bare change signal (the page re-reads its list)", m)
	}
}

// BenchmarkInboxList1000 is GET /inbox/questions for a person with 1,000
// open questions (memory store): the index read, 1,000 reads, rendering
// each message from Markdown and the JSON. A figure, not a test:
//
//	go test -run '^$' -bench InboxList1000 -benchtime 20x ./handlers/
func BenchmarkInboxList1000(b *testing.B) {
	st := store.NewMemory()
	defer st.Close()
	benchInboxList(b, st, 1000)
}

// BenchmarkInboxListRedis100 is the same with 100 open questions on a real
// redis-server, where each question is a round trip:
//
//	go test -run '^$' -bench InboxListRedis100 -benchtime 200x ./handlers/
func BenchmarkInboxListRedis100(b *testing.B) {
	rs := redistest.Start(b)
	st, err := store.NewRedis(store.RedisOptions{URL: rs.URL(), KeyPrefix: "bench:"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchInboxList(b, st, 100)
}

func benchInboxList(b *testing.B, st store.Store, n int) {
	svc := newServiceWith(b, st, feedback.Config{IndexByOwner: true})
	hp, err := NewHuman(svc, HumanConfig{})
	if err != nil {
		b.Fatal(err)
	}
	in, err := NewInbox(hp, InboxConfig{Login: headerLogin{}})
	if err != nil {
		b.Fatal(err)
	}
	tok := mint(b, "alice")
	for i := range n {
		create(b, svc, tok, fmt.Sprintf(`{"message":"Question **%d**: deploy `+"`v%d`"+` to production?","predefinedOptions":["yes","no"],"metadata":{"agent_name":"bot-%d"}}`, i, i, i%7))
	}
	req := httptest.NewRequest("GET", "/inbox/questions", nil)
	req.Header.Set("X-Test-Person", "alice")
	var size int
	for b.Loop() {
		w := httptest.NewRecorder()
		in.List(w, req)
		if w.Code != 200 {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
		size = w.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes")
}
