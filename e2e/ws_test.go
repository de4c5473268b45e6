package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// The WebSocket against the real Caddy binary: the message sequence behind
// `encode gzip` on HTTPS too, refusals, several instances on one Redis, and
// the close codes of a reload and a shutdown.

type wsEvent struct {
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

func wsBase(base string) string {
	return "ws" + strings.TrimPrefix(base, "http")
}

func wsDial(t testing.TB, c *Caddy, url string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: hdr}
	if tr, ok := c.Client.Transport.(*http.Transport); ok && strings.HasPrefix(url, "wss:") {
		// The internal CA's root, as the HTTPS client trusts it; HTTP/1.1,
		// as browsers use for WebSockets.
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tr.TLSClientConfig.RootCAs, NextProtos: []string{"http/1.1"}}}}
	}
	conn, resp, err := websocket.Dial(ctx, url, opts)
	if conn != nil {
		t.Cleanup(func() { conn.CloseNow() })
	}
	return conn, resp, err
}

// watchAsPage connects like the answer page: token as the first message.
func watchAsPage(t testing.TB, c *Caddy, base, id, capTok string) *websocket.Conn {
	t.Helper()
	conn, resp, err := wsDial(t, c, wsBase(base)+"/ws/"+id+"?clientType=web", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	b, _ := json.Marshal(map[string]any{"type": "authenticate", "data": map[string]string{"token": capTok}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	if ev, code := readEvent(t, conn); code != 0 || ev.Type != "connection_established" || ev.Data["status"] != "pending" {
		t.Fatalf("first message %+v, close %d", ev, code)
	}
	return conn
}

func readEvent(t testing.TB, conn *websocket.Conn) (wsEvent, websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil {
		if code := websocket.CloseStatus(err); code != -1 {
			return wsEvent{}, code
		}
		t.Fatalf("read: %v", err)
	}
	var ev wsEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return ev, 0
}

// expectSubmitted reads the rest of a watch after a submit.
func expectSubmitted(t testing.TB, conn *websocket.Conn, id, freeText string) {
	t.Helper()
	ev, code := readEvent(t, conn)
	if code != 0 || ev.Type != "session_status_changed" || ev.Data["status"] != "submitted" || ev.Data["previousStatus"] != "pending" || ev.Data["sessionId"] != id {
		t.Fatalf("want session_status_changed, got %+v (close %d)", ev, code)
	}
	ev, code = readEvent(t, conn)
	res, _ := ev.Data["result"].(map[string]any)
	if code != 0 || ev.Type != "feedback_submitted" || res["freeText"] != freeText {
		t.Fatalf("want feedback_submitted, got %+v (close %d)", ev, code)
	}
	if _, code = readEvent(t, conn); code != websocket.StatusNormalClosure {
		t.Fatalf("want close 1000 after the answer, got %d", code)
	}
}

func TestWebSocketRealCaddy(t *testing.T) {
	c := startCaddy(t, strings.Replace(memorySites, "jwt_secret {env.JWT_SECRET}",
		"jwt_secret {env.JWT_SECRET}\n\t\tallowed_origins https://app.example.com\n\t\tws_max_per_session 5", 1))
	alice := token(t, "alice")
	for _, base := range []string{c.HTTP, c.HTTPS} {
		t.Run(base[:strings.Index(base, ":")], func(t *testing.T) {
			cr, capTok := createSession(t, c.Client, base, alice, `{"message":"ship?","predefinedOptions":["yes","no"]}`)
			watchers := []*websocket.Conn{watchAsPage(t, c, base, cr.SessionID, capTok), watchAsPage(t, c, base, cr.SessionID, capTok)}
			owner, resp, err := wsDial(t, c, wsBase(base)+"/ws/"+cr.SessionID+"?clientType=app", http.Header{"Authorization": {"Bearer " + alice}})
			if err != nil {
				t.Fatalf("owner dial: %v %v", err, resp)
			}
			if ev, _ := readEvent(t, owner); ev.Type != "connection_established" || ev.Data["clientType"] != "app" {
				t.Fatalf("owner first message %+v", ev)
			}
			watchers = append(watchers, owner)
			r := do(t, c.Client, "POST", base+"/api/feedback/"+cr.SessionID+"/submit", `{"selectedOptions":["yes"],"freeText":"go"}`, "X-Feedback-Token", capTok)
			if r.Status != 200 {
				t.Fatalf("submit: %d %s", r.Status, r.Body)
			}
			for _, w := range watchers {
				expectSubmitted(t, w, cr.SessionID, "go")
			}
		})
	}

	cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"refusals"}`)
	ws := wsBase(c.HTTP) + "/ws/" + cr.SessionID
	if _, resp, err := wsDial(t, c, ws, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("foreign Origin: %v %v, want 403", err, resp)
	}
	if conn, resp, err := wsDial(t, c, ws, http.Header{"Origin": {"https://app.example.com"}}); err != nil {
		t.Errorf("allowed_origins origin refused: %v %v", err, resp)
	} else {
		conn.CloseNow()
	}
	if _, resp, err := wsDial(t, c, ws+"?apiKey="+alice, nil); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Errorf("?apiKey=: %v %v, want 400", err, resp)
	}
	for name, send := range map[string]func(*websocket.Conn) error{
		"wrong token": func(conn *websocket.Conn) error {
			return conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"authenticate","data":{"token":"`+capTok+`X"}}`))
		},
		"oversized frame": func(conn *websocket.Conn) error {
			return conn.Write(context.Background(), websocket.MessageText, []byte(strings.Repeat("x", 1<<20)))
		},
	} {
		conn, _, err := wsDial(t, c, ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = send(conn)
		want := websocket.StatusPolicyViolation
		if name == "oversized frame" {
			want = websocket.StatusMessageTooBig
		}
		if _, code := readEvent(t, conn); code != want {
			t.Errorf("%s: close %d, want %d", name, code, want)
		}
	}
	// Absent token: the server closes with 1008 after 5 s.
	conn, _, err := wsDial(t, c, ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, code := readEvent(t, conn); code != websocket.StatusPolicyViolation {
		t.Errorf("no token: close %d, want 1008", code)
	}
	if strings.Contains(c.logs.String(), capTok) {
		t.Error("a capability token appears in Caddy's log")
	}
}

// TestWebSocketAcrossInstances: a watcher on one Caddy sees a submit made
// through another; they share nothing but Redis.
func TestWebSocketAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	a := startCaddy(t, redisSites(rs.URL()))
	b := startCaddy(t, redisSites(rs.URL()))
	cr, capTok := createSession(t, a.Client, a.HTTP, token(t, "alice"), `{"message":"across?"}`)
	onB := watchAsPage(t, b, b.HTTP, cr.SessionID, capTok)
	onA := watchAsPage(t, a, a.HTTP, cr.SessionID, capTok)
	if r := do(t, a.Client, "POST", a.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"from A"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit on A: %d %s", r.Status, r.Body)
	}
	expectSubmitted(t, onB, cr.SessionID, "from A")
	expectSubmitted(t, onA, cr.SessionID, "from A")
}

// TestWebSocketReloadAndShutdown: a config reload closes sockets with 1012
// and the client can reconnect at once; a shutdown closes them with 1001.
func TestWebSocketReloadAndShutdown(t *testing.T) {
	c := startCaddy(t, memorySites)
	cr, capTok := createSession(t, c.Client, c.HTTP, token(t, "alice"), `{"message":"reload?"}`)
	conn := watchAsPage(t, c, c.HTTP, cr.SessionID, capTok)
	codes := make(chan websocket.StatusCode, 1)
	go func() {
		_, _, err := conn.Read(context.Background())
		codes <- websocket.CloseStatus(err)
	}()
	c.reload(strings.Replace(memorySites, "jwt_secret {env.JWT_SECRET}", "jwt_secret {env.JWT_SECRET}\n\t\tmax_options 5", 1))
	if code := <-codes; code != websocket.StatusServiceRestart {
		t.Fatalf("on reload: close %d, want 1012", code)
	}
	// The session lives in the pooled store: reconnecting works at once.
	conn = watchAsPage(t, c, c.HTTP, cr.SessionID, capTok)
	go func() {
		_, _, err := conn.Read(context.Background())
		codes <- websocket.CloseStatus(err)
	}()
	c.stop()
	if code := <-codes; code != websocket.StatusGoingAway {
		t.Fatalf("on shutdown: close %d, want 1001", code)
	}
	if c.exitErr != nil {
		t.Fatalf("caddy exited with %v:\n%s", c.exitErr, tail(c.logs.String(), 3000))
	}
}

// TestTokenNotInAccessLog: with Caddy's access log on, what the answer page
// does — open the shell, fetch the view, submit, watch over the socket —
// leaves the capability token in no log line. (Caddy logs request headers,
// so REST clients that use X-Feedback-Token need a log filter; see README.)
func TestTokenNotInAccessLog(t *testing.T) {
	c := startCaddy(t, strings.Replace(memorySites, "\tmcp_feedback {", "\tlog\n\tmcp_feedback {", 1))
	cr, capTok := createSession(t, c.Client, c.HTTP, token(t, "alice"), `{"message":"logged?"}`)
	page := c.HTTP + "/feedback/" + cr.SessionID
	if r := do(t, c.Client, "GET", page, ""); r.Status != 200 {
		t.Fatalf("page: %d", r.Status)
	}
	if r := do(t, c.Client, "POST", page+"/view", `{"token":"`+capTok+`"}`); r.Status != 200 {
		t.Fatalf("view: %d %s", r.Status, r.Body)
	}
	conn := watchAsPage(t, c, c.HTTP, cr.SessionID, capTok)
	if r := do(t, c.Client, "POST", page+"/submit", `{"token":"`+capTok+`","answer":{"freeText":"x","nonce":"n"}}`); r.Status != 200 {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	expectSubmitted(t, conn, cr.SessionID, "x")
	c.stop() // flushes the log
	logs := c.logs.String()
	for _, uri := range []string{"/view", "/submit", ""} {
		if !strings.Contains(logs, `"uri":"/feedback/`+cr.SessionID+uri+`"`) {
			t.Fatalf("the access log lacks the page's request %q:\n%s", uri, tail(logs, 3000))
		}
	}
	if strings.Contains(logs, capTok) {
		t.Fatalf("the capability token is in the log:\n%s", tail(logs, 3000))
	}
}
