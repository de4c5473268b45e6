package e2e

import (
	"bufio"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
)

// heldSites: the module at the root, and under /gz/ behind `encode gzip`
// (a compressed stream cannot be taken over, so calls there keep the
// ordinary path). One memory store, so one set of MCP sessions.
const heldSites = `
http://127.0.0.1:{HTTP} {
	handle_path /gz/* {
		encode gzip
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
		}
	}
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
	respond "next handler" 200
}
`

// heldPost posts one JSON-RPC message at url in session sid ("" for none)
// and returns the response and its body (the last data line of an event
// stream).
func heldPost(t *testing.T, c *Caddy, url, tok, sid, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	out := string(b)
	if i := strings.LastIndex(out, "data: "); i >= 0 {
		out = strings.TrimSpace(out[i+6:])
	}
	return resp, out
}

// rawSession initializes a Streamable HTTP session at url and returns its id.
func rawSession(t *testing.T, c *Caddy, url, tok string) string {
	t.Helper()
	resp, _ := heldPost(t, c, url, tok, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e-held","version":"0"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatal("no session id")
	}
	heldPost(t, c, url, tok, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return sid
}

// askIn asks message with interactive_feedback (not waiting) in session
// sid at url and returns the question's id: the session then knows its
// answer link, which a wait's progress names.
func askIn(t *testing.T, c *Caddy, url, tok, sid, message string) string {
	t.Helper()
	_, body := heldPost(t, c, url, tok, sid, fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":%q}}}`, message))
	var m struct {
		Result struct {
			StructuredContent struct {
				SessionID string `json:"sessionId"`
			} `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.Result.StructuredContent.SessionID == "" {
		t.Fatalf("interactive_feedback: %s", body)
	}
	return m.Result.StructuredContent.SessionID
}

// heldCall is a get_feedback_result with wait on its own HTTP/1.1
// connection, read off the wire.
type heldCall struct {
	t      *testing.T
	conn   net.Conn
	resp   *http.Response
	events *bufio.Reader
}

func openHeldCall(t *testing.T, c *Caddy, path, tok, sid, question string, id int) *heldCall {
	t.Helper()
	return openHeldCallAt(t, c, c.HTTP, path, tok, sid, question, id)
}

// openHeldCallAt is openHeldCall at base, which may be https:// (then over
// TLS with HTTP/1.1, as Node's fetch speaks it, trusting Caddy's local CA).
func openHeldCallAt(t *testing.T, c *Caddy, base, path, tok, sid, question string, id int) *heldCall {
	t.Helper()
	var (
		conn net.Conn
		err  error
	)
	host, secure := strings.CutPrefix(base, "https://")
	if secure {
		roots := c.Client.Transport.(*http.Transport).TLSClientConfig.RootCAs
		conn, err = tls.Dial("tcp", host, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	} else {
		host = strings.TrimPrefix(base, "http://")
		conn, err = net.Dial("tcp", host)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"get_feedback_result","arguments":{"sessionId":%q,"wait":600},"_meta":{"progressToken":"p%d"}}}`, id, question, id)
	// Accept-Encoding as Go's and Node's HTTP clients send it.
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAccept-Encoding: gzip\r\n"+
		"Authorization: Bearer %s\r\nMcp-Session-Id: %s\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n\r\n%s", path, host, tok, sid, len(msg), msg)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response head: %v", err)
	}
	h := &heldCall{t: t, conn: conn, resp: resp}
	body := io.Reader(resp.Body)
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("gzip stream: %v", err)
		}
		body = zr
	}
	h.events = bufio.NewReader(body)
	return h
}

// event reads the next event's JSON-RPC message.
func (h *heldCall) event() map[string]any {
	h.t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := harness.NextEvent(h.events)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// progressLink reads the first event, which must be this call's progress,
// and returns the answer link it names.
func (h *heldCall) progressLink(id int) string {
	h.t.Helper()
	ev := h.event()
	params, _ := ev["params"].(map[string]any)
	if ev["method"] != "notifications/progress" || params["progressToken"] != fmt.Sprint("p", id) {
		h.t.Fatalf("first event is not the call's progress: %v", ev)
	}
	return linkIn(h.t, fmt.Sprint(params["message"]))
}

func (h *heldCall) result(id int) string {
	h.t.Helper()
	ev := h.event()
	if ev["id"] != float64(id) || ev["result"] == nil {
		h.t.Fatalf("call %d's response: %v", id, ev)
	}
	b, _ := json.Marshal(ev["result"])
	return string(b)
}

// TestMCPHeldCallsInCaddy: through the real Caddy binary, a waiting call on
// HTTP/1.1 is held (its response says Connection: close, its progress and
// result come on its own stream, then the connection closes); it lives
// through a config reload; behind `encode gzip` a call keeps the ordinary
// path and works too; an exit ends a held call with its "restarting"
// result.
func TestMCPHeldCallsInCaddy(t *testing.T) {
	c := startMCPCaddy(t, heldSites)
	alice := token(t, "alice")
	sid := rawSession(t, c, c.HTTP+"/mcp", alice)
	// Questions asked in the session the waits use, whose progress then
	// names the answer link.
	ask := func() string { return askIn(t, c, c.HTTP+"/mcp", alice, sid, "held in caddy?") }

	// Held, then a reload, then answered.
	q := ask()
	h := openHeldCall(t, c, "/mcp", alice, sid, q, 10)
	if !h.resp.Close || h.resp.Header.Get("Content-Type") != "text/event-stream" || h.resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("held call's response head: close %v, %v", h.resp.Close, h.resp.Header)
	}
	link := h.progressLink(10)
	c.reload(heldSites)
	answer(t, c, link, `{"freeText":"after a reload"}`)
	if res := h.result(10); !strings.Contains(res, "after a reload") || !strings.Contains(res, `"status":"submitted"`) {
		t.Fatalf("held call's result: %s", res)
	}
	if rest, err := io.ReadAll(h.events); err != nil || len(rest) != 0 {
		t.Fatalf("after the result: %q, %v", rest, err)
	}
	c.waitLog(t, "stopped waiting", "submitted")

	// Behind encode gzip: the ordinary path, compressed (the head already
	// said Connection: close when the encoder showed itself).
	q = ask()
	gz := openHeldCall(t, c, "/gz/mcp", alice, sid, q, 11)
	if gz.resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("call behind encode gzip: close %v, %v", gz.resp.Close, gz.resp.Header)
	}
	link = gz.progressLink(11)
	answer(t, c, link, `{"freeText":"compressed"}`)
	if res := gz.result(11); !strings.Contains(res, "compressed") {
		t.Fatalf("result behind encode gzip: %s", res)
	}

	// An exit ends a held call with a result.
	q = ask()
	h = openHeldCall(t, c, "/mcp", alice, sid, q, 12)
	h.progressLink(12)
	c.stop()
	if res := h.result(12); !strings.Contains(res, "restarting") || !strings.Contains(res, `"status":"pending"`) {
		t.Fatalf("held call's result on exit: %s", res)
	}
	if c.exitErr != nil {
		t.Fatalf("caddy exited with %v", c.exitErr)
	}
}

// TestMCPHeldElicitationInCaddy: through the real Caddy binary, a waiting
// call whose client takes URL elicitations is held too: the elicitation
// comes first on the call's own stream (Connection: close), the client's
// reply reaches the call across a config reload, elicitation/complete
// comes before the result; behind `encode gzip` the same happens on the
// ordinary path, through mcp-go; an exit ends a held call with its
// "restarting" result and no elicitation/complete (nothing was answered).
func TestMCPHeldElicitationInCaddy(t *testing.T) {
	c := startMCPCaddy(t, heldSites)
	alice := token(t, "alice")
	resp, _ := heldPost(t, c, c.HTTP+"/mcp", alice, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"url":{}}},"clientInfo":{"name":"e2e-held-elicit","version":"0"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	heldPost(t, c, c.HTTP+"/mcp", alice, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	ask := func() string { return askIn(t, c, c.HTTP+"/mcp", alice, sid, "held with an elicitation?") }
	// elicitation reads the call's elicitation and its first progress: on
	// a held call in that order (both are written by the call, the
	// elicitation first); on the ordinary path in either.
	elicitation := func(h *heldCall, id int, held bool) (params map[string]any, rpcID string) {
		t.Helper()
		var progress bool
		for params == nil || !progress {
			ev := h.event()
			if ev["method"] == "notifications/progress" && (!held || params != nil) {
				progress = true
				continue
			}
			params, _ = ev["params"].(map[string]any)
			rid, _ := json.Marshal(ev["id"])
			rpcID = string(rid)
			if ev["method"] != "elicitation/create" || params["mode"] != "url" || !strings.Contains(fmt.Sprint(params["url"]), "/feedback/") {
				t.Fatalf("want the call's elicitation, got %v", ev)
			}
		}
		return params, rpcID
	}
	completeThenResult := func(h *heldCall, id int, params map[string]any) string {
		t.Helper()
		ev := h.event()
		cp, _ := ev["params"].(map[string]any)
		if ev["method"] != "notifications/elicitation/complete" || cp["elicitationId"] != params["elicitationId"] {
			t.Fatalf("before the result, want elicitation/complete for %v: %v", params["elicitationId"], ev)
		}
		return h.result(id)
	}

	// Held, the reply across a reload, then answered on the page.
	h := openHeldCall(t, c, "/mcp", alice, sid, ask(), 20)
	if !h.resp.Close || h.resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("held call's response head: close %v, %v", h.resp.Close, h.resp.Header)
	}
	params, rid := elicitation(h, 20, true)
	if !strings.HasPrefix(rid, `"`) {
		t.Fatalf("a held call's elicitation has an id of its own (a string), not mcp-go's: %s", rid)
	}
	c.reload(heldSites)
	if r, _ := heldPost(t, c, c.HTTP+"/mcp", alice, sid, `{"jsonrpc":"2.0","id":`+rid+`,"result":{"action":"accept"}}`); r.StatusCode != http.StatusAccepted {
		t.Fatalf("the elicitation reply: %d", r.StatusCode)
	}
	c.waitLog(t, "URL elicitation answered", "accept")
	answer(t, c, fmt.Sprint(params["url"]), `{"freeText":"opened in caddy"}`)
	if res := completeThenResult(h, 20, params); !strings.Contains(res, "opened in caddy") {
		t.Fatalf("held call's result: %s", res)
	}
	if rest, err := io.ReadAll(h.events); err != nil || len(rest) != 0 {
		t.Fatalf("after the result: %q, %v", rest, err)
	}

	// Behind encode gzip: mcp-go's elicitation on the ordinary path.
	gz := openHeldCall(t, c, "/gz/mcp", alice, sid, ask(), 21)
	if gz.resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("call behind encode gzip: %v", gz.resp.Header)
	}
	params, rid = elicitation(gz, 21, false)
	if strings.HasPrefix(rid, `"`) {
		t.Fatalf("behind encode gzip the elicitation is mcp-go's (a number): %s", rid)
	}
	if r, _ := heldPost(t, c, c.HTTP+"/gz/mcp", alice, sid, `{"jsonrpc":"2.0","id":`+rid+`,"result":{"action":"decline"}}`); r.StatusCode != http.StatusAccepted {
		t.Fatalf("the elicitation reply behind encode gzip: %d", r.StatusCode)
	}
	c.waitLog(t, "URL elicitation answered", "decline")
	answer(t, c, fmt.Sprint(params["url"]), `{"freeText":"compressed"}`)
	if res := completeThenResult(gz, 21, params); !strings.Contains(res, "compressed") {
		t.Fatalf("result behind encode gzip: %s", res)
	}

	// The TS SDK (a real client that declares elicitation): its call is
	// held (the elicitation's id is the held call's own), it accepts the
	// elicitation, and elicitation/complete reaches it before the result.
	p := runClient(t, "http", c.HTTP+"/mcp", "elicit", alice)
	ev := p.expect("elicitation")
	el, _ := ev["params"].(map[string]any)
	if id, _ := ev["requestId"].(string); !strings.HasPrefix(id, "feedback-elicitation-") || el["mode"] != "url" {
		t.Fatalf("the TS SDK's elicitation is not a held call's: %v", ev)
	}
	answer(t, c, fmt.Sprint(el["url"]), `{"freeText":"opened from the SDK"}`)
	res := p.expect("result")
	if done, _ := res["completedBeforeResult"].([]any); len(done) != 1 || done[0] != el["elicitationId"] {
		t.Fatalf("elicitation/complete before the result: %v, want [%v]", res["completedBeforeResult"], el["elicitationId"])
	}
	if r := asResult(t, res); r.Structured["status"] != "submitted" {
		t.Fatalf("result %+v", r)
	}
	p.finish()

	// An exit ends a held call with an open elicitation with a result.
	h = openHeldCall(t, c, "/mcp", alice, sid, ask(), 22)
	elicitation(h, 22, true)
	c.stop()
	if res := h.result(22); !strings.Contains(res, "restarting") || !strings.Contains(res, `"status":"pending"`) {
		t.Fatalf("held call's result on exit: %s", res)
	}
	if c.exitErr != nil {
		t.Fatalf("caddy exited with %v", c.exitErr)
	}
}

// TestMCPHeldCallOverTLS: on HTTPS with HTTP/1.1 (what Node's fetch, and so
// most MCP clients, speak) a waiting call is held too: the taken-over
// connection is the TLS one, and its progress and result arrive intact.
func TestMCPHeldCallOverTLS(t *testing.T) {
	c := startMCPCaddy(t, `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
}
https://localhost:{HTTPS} {
	tls internal
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
	}
}
`)
	alice := token(t, "alice")
	sid := rawSession(t, c, c.HTTPS+"/mcp", alice)
	h := openHeldCallAt(t, c, c.HTTPS, "/mcp", alice, sid, askIn(t, c, c.HTTPS+"/mcp", alice, sid, "held over TLS?"), 20)
	if !h.resp.Close || h.resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("held call's response head over TLS: close %v, %v", h.resp.Close, h.resp.Header)
	}
	link := h.progressLink(20)
	c.waitLog(t, "waiting call taken off its request", `"tls":true`)
	answer(t, c, link, `{"freeText":"over TLS"}`)
	if res := h.result(20); !strings.Contains(res, "over TLS") || !strings.Contains(res, `"status":"submitted"`) {
		t.Fatalf("held call's result over TLS: %s", res)
	}
	if rest, err := io.ReadAll(h.events); err != nil || len(rest) != 0 {
		t.Fatalf("after the result: %q, %v", rest, err)
	}
}
