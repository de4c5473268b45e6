package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestMCPHeldElicitation: a waiting call whose client declared elicitation
// is held like any other (mcp_held.go): the elicitation goes out first on
// the call's own stream, the client's reply (a POST of its own) reaches
// the call, elicitation/complete comes before the result, and nothing of
// the call or its elicitation is left after it.
func TestMCPHeldElicitation(t *testing.T) {
	runtime.GC()
	base := runtime.NumGoroutine()
	t.Run("accept, then the answer on the page", testHeldElicitAccept)
	t.Run("decline", testHeldElicitDecline)
	t.Run("answered on the page while the elicitation is open", testHeldElicitPageFirst)
	t.Run("form answered in the client", testHeldElicitForm)
	t.Run("hostile replies", testHeldElicitHostile)
	t.Run("client disconnects", testHeldElicitDisconnect)
	t.Run("notifications/cancelled", testHeldElicitCancelled)
	t.Run("many at once, replies racing the takeover", testHeldElicitRace)
	t.Run("a response that cannot be held keeps mcp-go's elicitation", testHeldElicitFallback)
	t.Run("mcp-go's own client", testHeldElicitGoClient)
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the held elicitation tests, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// elicitSession opens a raw session whose client declares caps (the
// initialize capabilities' elicitation object).
func (e *mcpEnv) elicitSession(tok, caps string) *rpc {
	r := &rpc{t: e.t, url: e.srv.URL + "/mcp", tok: tok}
	resp := r.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":`+caps+`},"clientInfo":{"name":"raw","version":"0"}}}`, nil)
	if resp.code != 200 {
		e.t.Fatalf("initialize: %d %s", resp.code, resp.body)
	}
	r.session = resp.header.Get("Mcp-Session-Id")
	r.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil)
	return r
}

// elicitEnv is one server, one raw session of a client that takes URL
// elicitations, and one open question.
func elicitEnv(t *testing.T, opts ...envOption) (*mcpEnv, *rpc, string, Outcome) {
	e := newMCPEnv(t, store.NewMemory(), opts...)
	tok := mint(t, "alice")
	r := e.elicitSession(tok, `{"url":{}}`)
	return e, r, tok, askRaw(t, r, "held with an elicitation?")
}

// openElicited opens a held get_feedback_result and checks what it starts
// with now: the elicitation, then the first progress, on the call's own
// stream. It returns the stream and the elicitation request.
func openElicited(t *testing.T, e *mcpEnv, r *rpc, tok string, o Outcome, id int) (*heldStream, map[string]any) {
	t.Helper()
	h := openHeld(t, e, tok, r.session, getResultMsg(id, o.SessionID, 600, fmt.Sprint("tok", id)))
	if h.resp.StatusCode != 200 || h.resp.Header.Get("Content-Type") != "text/event-stream" || !h.resp.Close {
		t.Fatalf("held response head: %d %v, close %v", h.resp.StatusCode, h.resp.Header, h.resp.Close)
	}
	el := h.event()
	params, _ := el["params"].(map[string]any)
	if rid, _ := el["id"].(string); el["method"] != "elicitation/create" || !strings.HasPrefix(rid, heldElicitationPrefix) {
		t.Fatalf("first event is not the elicitation: %v", el)
	}
	if params["mode"] == "url" && (params["url"] != o.FeedbackURL || !strings.HasPrefix(fmt.Sprint(params["elicitationId"]), o.SessionID+".")) {
		t.Fatalf("URL elicitation for another question: %v", params)
	}
	if ev := h.event(); ev["method"] != "notifications/progress" {
		t.Fatalf("second event is not the progress: %v", ev)
	}
	waitFor(t, "the call to be held", func() bool { return e.m.Held() == 1 })
	return h, el
}

// reply posts the client's answer to the elicitation el.
func reply(r *rpc, el map[string]any, result string) rpcResp {
	r.t.Helper()
	id, _ := json.Marshal(el["id"])
	return r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":%s}`, id, result), nil)
}

// completeThenResult reads the end of a held URL-elicited call: the
// elicitation/complete for el, then the call's result (returned), then the
// end of the body.
func completeThenResult(t *testing.T, h *heldStream, el map[string]any, id int) map[string]any {
	t.Helper()
	params, _ := el["params"].(map[string]any)
	c, err := h.next()
	cp, _ := c["params"].(map[string]any)
	if err != nil || c["method"] != "notifications/elicitation/complete" || cp["elicitationId"] != params["elicitationId"] {
		t.Fatalf("before the result, want elicitation/complete for %v: %v, %v", params["elicitationId"], c, err)
	}
	got, err := h.next()
	if err != nil {
		t.Fatal(err)
	}
	h.end()
	if got["id"] != float64(id) || got["error"] != nil {
		t.Fatalf("the held call's response: %v", got)
	}
	return got
}

// noElicitsLeft: the session takes no more replies for held calls.
func noElicitsLeft(t *testing.T, e *mcpEnv, r *rpc) {
	t.Helper()
	s := e.m.session(r.session)
	waitFor(t, "the elicitation to be let go", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.elicits) == 0
	})
}

func testHeldElicitAccept(t *testing.T) {
	e, r, tok, o := elicitEnv(t)
	h, el := openElicited(t, e, r, tok, o, 31)
	if resp := reply(r, el, `{"action":"accept"}`); resp.code != http.StatusAccepted {
		t.Fatalf("the elicitation reply: %d %s", resp.code, resp.body)
	}
	e.waitLog("mcp: URL elicitation answered", "accept")
	if e.m.Held() != 1 {
		t.Fatal("the reply ended the wait; the answer is on the page")
	}
	e.submit(o.FeedbackURL, `{"freeText":"through the opened page"}`)
	got := completeThenResult(t, h, el, 31)
	if !strings.Contains(fmt.Sprint(got["result"]), "through the opened page") {
		t.Fatalf("result: %v", got)
	}
	released(t, e)
	noElicitsLeft(t, e, r)
}

func testHeldElicitDecline(t *testing.T) {
	e, r, tok, o := elicitEnv(t)
	h, el := openElicited(t, e, r, tok, o, 32)
	if resp := reply(r, el, `{"action":"decline"}`); resp.code != http.StatusAccepted {
		t.Fatalf("the decline: %d %s", resp.code, resp.body)
	}
	e.waitLog("mcp: URL elicitation answered", "decline")
	// One reply per request: a second one is refused as mcp-go refuses a
	// reply to a request it does not wait for, and names the problem.
	if resp := reply(r, el, `{"action":"accept"}`); resp.code != http.StatusBadRequest || !strings.Contains(resp.body, "request ID") {
		t.Fatalf("a second reply: %d %s", resp.code, resp.body)
	}
	if e.m.Held() != 1 {
		t.Fatal("a declined elicitation ended the wait; the link still works")
	}
	e.submit(o.FeedbackURL, `{"freeText":"declined, then answered"}`)
	completeThenResult(t, h, el, 32)
	released(t, e)
}

func testHeldElicitPageFirst(t *testing.T) {
	e, r, tok, o := elicitEnv(t)
	h, el := openElicited(t, e, r, tok, o, 33)
	e.submit(o.FeedbackURL, `{"freeText":"before the client replied"}`)
	completeThenResult(t, h, el, 33)
	released(t, e)
	noElicitsLeft(t, e, r)
	// The client's reply, late now, is not taken for anything.
	if resp := reply(r, el, `{"action":"cancel"}`); resp.code != http.StatusBadRequest {
		t.Fatalf("a reply after the call ended: %d %s", resp.code, resp.body)
	}
	e.waitLog("mcp: stopped waiting", "submitted")
}

// testHeldElicitForm: with `elicitation form`, an option question goes out
// as a form on the held stream; the client's accepted answer is stored
// (via elicitation) and is the call's result. A form has no
// elicitation/complete.
func testHeldElicitForm(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.Elicitation = ElicitationForm })
	tok := mint(t, "alice")
	r := e.elicitSession(tok, `{"form":{}}`)
	r.id++
	resp := r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"interactive_feedback","arguments":{"message":"Deploy now?","predefinedOptions":["yes","later"]}}}`, r.id), nil)
	var created struct {
		Result struct {
			StructuredContent Outcome `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(resp.body), &created); err != nil || created.Result.StructuredContent.SessionID == "" {
		t.Fatalf("interactive_feedback: %s", resp.body)
	}
	o := created.Result.StructuredContent
	h, el := openElicited(t, e, r, tok, o, 34)
	params, _ := el["params"].(map[string]any)
	if params["mode"] != "form" || params["message"] != "Deploy now?" || !strings.Contains(fmt.Sprint(params["requestedSchema"]), "later") {
		t.Fatalf("form elicitation: %v", params)
	}
	if resp := reply(r, el, `{"action":"accept","content":{"answer":"later","comment":"after lunch"}}`); resp.code != http.StatusAccepted {
		t.Fatalf("the form reply: %d %s", resp.code, resp.body)
	}
	got := h.event()
	h.end()
	b, _ := json.Marshal(got["result"])
	if got["id"] != float64(34) || !strings.Contains(string(b), `"selectedOptions":["later"]`) || !strings.Contains(string(b), "after lunch") {
		t.Fatalf("the form's answer as the result: %v", got)
	}
	released(t, e)
	e.waitLog("mcp: answer submitted from a form elicitation", o.SessionID)
}

// testHeldElicitHostile: replies that are not this call's reply, or not
// well formed, are not taken for it: none gets a 5xx, each refusal says
// what was wrong, and the call still takes its real reply afterwards.
func testHeldElicitHostile(t *testing.T) {
	e, r, tok, o := elicitEnv(t)
	h, el := openElicited(t, e, r, tok, o, 35)
	id, _ := el["id"].(string)
	other := e.elicitSession(tok, `{"url":{}}`) // alice's second session
	accept := fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"result":{"action":"accept"}}`, id)
	for _, c := range []struct {
		name, body string
		via        *rpc
		want       int
		hdr        map[string]string
	}{
		{"an unknown protocol version", accept, r, 400, map[string]string{"Mcp-Protocol-Version": "1999-01-01"}},
		{"the 2026-07-28 protocol, which has no replies", accept, r, 400, map[string]string{"Mcp-Protocol-Version": "2026-07-28"}},
		{"unknown id", fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"result":{"action":"accept"}}`, heldElicitationPrefix+"999999"), r, 400, nil},
		{"id in an array", fmt.Sprintf(`{"jsonrpc":"2.0","id":[%q],"result":{"action":"accept"}}`, id), r, 400, nil},
		{"id as an object", fmt.Sprintf(`{"jsonrpc":"2.0","id":{"id":%q},"result":{"action":"accept"}}`, id), r, 400, nil},
		{"not JSON", fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"result":`, id), r, 0, nil},
		{"a request with that id", fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"method":"ping"}`, id), r, 200, nil},
		{"from another session", fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"result":{"action":"accept"}}`, id), other, 400, nil},
	} {
		resp := c.via.post(c.body, c.hdr)
		if resp.code >= 500 || (c.want != 0 && resp.code != c.want) || (resp.code >= 400 && strings.TrimSpace(resp.body) == "") {
			t.Errorf("%s: HTTP %d %q", c.name, resp.code, resp.body)
		}
	}
	if e.m.Held() != 1 {
		t.Fatalf("a hostile reply ended the call (held %d)", e.m.Held())
	}
	// A reply with an error, or a result that is not one, is taken (202,
	// as mcp-go takes it) and leaves the wait going: the page still works.
	if resp := r.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"error":{"code":-32600,"message":"no UI"}}`, id), nil); resp.code != http.StatusAccepted {
		t.Fatalf("an error reply: %d %s", resp.code, resp.body)
	}
	e.waitLog("mcp: URL elicitation failed", o.SessionID)
	e.submit(o.FeedbackURL, `{"freeText":"despite it all"}`)
	completeThenResult(t, h, el, 35)
	released(t, e)
}

func testHeldElicitDisconnect(t *testing.T) {
	e, r, tok, o := elicitEnv(t, func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxCallsPerSubject = 1 })
	h, el := openElicited(t, e, r, tok, o, 36)
	_ = h.conn.Close()
	released(t, e)
	noElicitsLeft(t, e, r)
	e.waitLog("mcp: stopped waiting", "client went away")
	if resp := reply(r, el, `{"action":"accept"}`); resp.code != http.StatusBadRequest {
		t.Fatalf("a reply to a call whose client left: %d %s", resp.code, resp.body)
	}
	// The slot is free again (the cap is 1); the new call gets an
	// elicitation of its own.
	h2, el2 := openElicited(t, e, r, tok, o, 37)
	if el2["id"] == el["id"] {
		t.Fatalf("the same elicitation id twice: %v", el2["id"])
	}
	e.submit(o.FeedbackURL, `{"freeText":"after a reconnect"}`)
	completeThenResult(t, h2, el2, 37)
	released(t, e)
}

// testHeldElicitRace: many held calls of one session at once, each client
// replying the moment its elicitation arrives (while the request that was
// taken over may still be returning) and the page answering at the same
// time: every stream gets its own elicitation, completed before its own
// result, and each reply reaches its own call.
func testHeldElicitRace(t *testing.T) {
	const n = 12
	e := newMCPEnv(t, store.NewMemory(), func(_ *MCPOptions, c *MCPConfig, _ *validate.Limits) { c.MaxCallsPerSubject = n })
	tok := mint(t, "alice")
	r := e.elicitSession(tok, `{"url":{}}`)
	qs := make([]Outcome, n)
	for i := range qs {
		qs[i] = askRaw(t, r, fmt.Sprint("race ", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := 500 + i
			h := openHeld(t, e, tok, r.session, getResultMsg(id, qs[i].SessionID, 600, ""))
			ev, err := h.next()
			params, _ := ev["params"].(map[string]any)
			if err != nil || ev["method"] != "elicitation/create" || params["url"] != qs[i].FeedbackURL {
				errs <- fmt.Errorf("call %d: first event %v, %v", i, ev, err)
				return
			}
			rid, _ := json.Marshal(ev["id"])
			// The reply and the page's answer race each other and the
			// request's return.
			var inner sync.WaitGroup
			inner.Add(1)
			var code int
			go func() {
				defer inner.Done()
				code = postStatus(e, tok, r.session, fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"action":"accept"}}`, rid))
			}()
			e.submit(qs[i].FeedbackURL, fmt.Sprintf(`{"freeText":"race %d"}`, i))
			inner.Wait()
			if code != http.StatusAccepted && code != http.StatusBadRequest {
				// 400: the answer ended the call before the reply came.
				errs <- fmt.Errorf("call %d: reply HTTP %d", i, code)
				return
			}
			c, err := h.next()
			cp, _ := c["params"].(map[string]any)
			if err != nil || c["method"] != "notifications/elicitation/complete" || cp["elicitationId"] != params["elicitationId"] {
				errs <- fmt.Errorf("call %d: want its elicitation/complete, got %v, %v", i, c, err)
				return
			}
			res, err := h.next()
			if err != nil || res["id"] != float64(id) || !strings.Contains(fmt.Sprint(res["result"]), fmt.Sprintf("race %d", i)) {
				errs <- fmt.Errorf("call %d: result %v, %v", i, res, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	released(t, e)
	noElicitsLeft(t, e, r)
}

// next is event without failing the test (for other goroutines): the next
// event that is not a progress notification.
func (h *heldStream) next() (map[string]any, error) {
	_ = h.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		m, err := harness.NextEvent(h.body)
		if err != nil {
			return nil, err
		}
		if m["method"] != "notifications/progress" {
			return m, nil
		}
	}
}

// postStatus posts body in session sid and returns the status (for other
// goroutines than the test's).
func postStatus(e *mcpEnv, tok, sid, body string) int {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// testHeldElicitFallback: when the stream head is sent but the response
// cannot be taken over (here a Content-Encoding in front, as Caddy's
// encode sets), the call waits on the ordinary path, and its elicitation
// goes out through mcp-go on the same stream, its reply to mcp-go, its
// elicitation/complete before the result: today's behaviour.
func testHeldElicitFallback(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	first := e.srv
	inner := first.Config.Handler
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Encoding", "identity")
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(first.Close)
	tok := mint(t, "alice")
	r := e.elicitSession(tok, `{"url":{}}`)
	o := askRaw(t, r, "not held")
	h := openHeld(t, e, tok, r.session, getResultMsg(38, o.SessionID, 600, ""))
	el, err := h.next()
	if err != nil || el["method"] != "elicitation/create" {
		t.Fatalf("the elicitation: %v, %v", el, err)
	}
	if _, isNumber := el["id"].(float64); !isNumber || e.m.Held() != 0 {
		t.Fatalf("the elicitation is not mcp-go's (id %v), or the call was held (%d)", el["id"], e.m.Held())
	}
	if resp := reply(r, el, `{"action":"accept"}`); resp.code != http.StatusAccepted {
		t.Fatalf("the reply to mcp-go: %d %s", resp.code, resp.body)
	}
	e.waitLog("mcp: URL elicitation answered", "accept")
	e.submit(o.FeedbackURL, `{"freeText":"on the ordinary path"}`)
	completeThenResult(t, h, el, 38)
	released(t, e)
}

// testHeldElicitGoClient: mcp-go's client (over HTTP/1.1, so the call is
// held) takes the held call's elicitation, with its string id, from the
// call's stream, replies, and gets elicitation/complete and the result.
func testHeldElicitGoClient(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	got, complete, done := urlElicitCall(t, e, "Held, open me")
	p := recv(t, got, "the elicitation")
	if e.m.Held() != 1 {
		t.Fatalf("the call is not held (%d)", e.m.Held())
	}
	e.waitLog("mcp: URL elicitation answered", "accept")
	e.submit(p.URL, `{"freeText":"held and opened"}`)
	if o := outcome(t, recv(t, done, "the result")); o.Status != store.StatusSubmitted || o.Result.FreeText != "held and opened" {
		t.Fatalf("outcome %+v", o)
	}
	// The notification came on the call's stream before its result, so
	// the client has handled it by the time the result is returned.
	select {
	case id := <-complete:
		if id != p.ElicitationID {
			t.Fatalf("completed %q, want %q", id, p.ElicitationID)
		}
	default:
		t.Fatal("no elicitation/complete before the result")
	}
	released(t, e)
}

// testHeldElicitCancelled: notifications/cancelled ends a held call with
// its elicitation open as it ends any held call (mcp-go's error response on
// its stream), and the elicitation is let go with it.
func testHeldElicitCancelled(t *testing.T) {
	e, r, tok, o := elicitEnv(t)
	h, el := openElicited(t, e, r, tok, o, 39)
	if resp := r.post(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":39,"reason":"user"}}`, nil); resp.code != http.StatusAccepted {
		t.Fatalf("notifications/cancelled: HTTP %d %s", resp.code, resp.body)
	}
	got, err := h.next()
	if err != nil || got["id"] != float64(39) || got["error"] == nil {
		t.Fatalf("the cancelled call's response: %v, %v", got, err)
	}
	h.end()
	released(t, e)
	noElicitsLeft(t, e, r)
	if resp := reply(r, el, `{"action":"accept"}`); resp.code != http.StatusBadRequest {
		t.Fatalf("a reply to a cancelled call's elicitation: %d %s", resp.code, resp.body)
	}
}
