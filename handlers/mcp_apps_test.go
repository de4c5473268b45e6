package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/ui"
)

// appsCaps is what an MCP Apps host declares at initialize.
var appsCaps = map[string]any{UIExtension: map[string]any{"mimeTypes": []any{ui.AppMIMEType}}}

// connectWith opens a Streamable HTTP client as tok that declares caps
// (nil: none) and returns it with the initialize result.
func (e *mcpEnv) connectWith(tok string, exts map[string]any) (*client.Client, *mcp.InitializeResult) {
	e.t.Helper()
	tr, err := transport.NewStreamableHTTP(e.srv.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}))
	if err != nil {
		e.t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion("2025-11-25"))
	if err := c.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25"
	init.Params.ClientInfo = mcp.Implementation{Name: "apps-test", Version: "0"}
	init.Params.Capabilities.Extensions = exts
	res, err := c.Initialize(ctx, init)
	if err != nil {
		e.t.Fatalf("initialize: %v", err)
	}
	return c, res
}

// appQuestion is the view's part of an interactive_feedback result.
func appQuestion(t *testing.T, res *mcp.CallToolResult) (AppQuestion, bool) {
	t.Helper()
	if res.Meta == nil || res.Meta.AdditionalFields[AppMetaKey] == nil {
		return AppQuestion{}, false
	}
	b, _ := json.Marshal(res.Meta.AdditionalFields[AppMetaKey])
	var q AppQuestion
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatalf("_meta[%s] %s: %v", AppMetaKey, b, err)
	}
	return q, true
}

func pageViewOf(t *testing.T, res *mcp.CallToolResult) PageView {
	t.Helper()
	if res.IsError {
		t.Fatalf("tool error: %s", text(res))
	}
	b, _ := json.Marshal(res.StructuredContent)
	var v PageView
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("structuredContent %s: %v", b, err)
	}
	return v
}

func toolsByName(t *testing.T, c *client.Client) map[string]mcp.Tool {
	t.Helper()
	res, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]mcp.Tool{}
	for _, tool := range res.Tools {
		out[tool.Name] = tool
	}
	return out
}

func uiMeta(tool mcp.Tool) map[string]any {
	if tool.Meta == nil {
		return nil
	}
	m, _ := tool.Meta.AdditionalFields["ui"].(map[string]any)
	return m
}

// An MCP Apps host: the extension is answered, the tool names the view,
// the view is served with its CSP metadata, and the person answers through
// the app-only tool while the agent waits.
func TestMCPAppsHost(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	c, init := e.connectWith(mint(t, "alice"), appsCaps)
	if _, ok := init.Capabilities.Extensions[UIExtension]; !ok {
		t.Fatalf("initialize result does not advertise %s: %+v", UIExtension, init.Capabilities.Extensions)
	}

	tools := toolsByName(t, c)
	if got := uiMeta(tools[ToolInteractiveFeedback])["resourceUri"]; got != AppResourceURI {
		t.Fatalf("interactive_feedback _meta.ui.resourceUri = %v, want %s", got, AppResourceURI)
	}
	for _, name := range []string{ToolAppView, ToolAppAnswer} {
		vis, _ := json.Marshal(uiMeta(tools[name])["visibility"])
		if string(vis) != `["app"]` {
			t.Fatalf("%s visibility %s, want [\"app\"]", name, vis)
		}
	}

	ctx := context.Background()
	rr := mcp.ReadResourceRequest{}
	rr.Params.URI = AppResourceURI
	read, err := c.ReadResource(ctx, rr)
	if err != nil {
		t.Fatal(err)
	}
	if len(read.Contents) != 1 {
		t.Fatalf("%d contents", len(read.Contents))
	}
	html, ok := read.Contents[0].(mcp.TextResourceContents)
	if !ok || html.MIMEType != "text/html;profile=mcp-app" || html.Text != ui.AppHTML() {
		t.Fatalf("resource: %T %q", read.Contents[0], html.MIMEType)
	}
	bad := mcp.ReadResourceRequest{}
	bad.Params.URI = "ui://feedback/../../etc/passwd"
	if _, err := c.ReadResource(ctx, bad); err == nil {
		t.Fatal("reading an unknown ui:// resource succeeded")
	}
	csp, _ := json.Marshal(html.Meta["ui"])
	if !strings.Contains(string(csp), `"connectDomains":[]`) || !strings.Contains(string(csp), `"resourceDomains":[]`) {
		t.Fatalf("resource _meta.ui = %s, want a CSP with no domains", csp)
	}

	// wait: true still returns at once, while nobody has answered (a call
	// that waited would come back only submitted, expired or cancelled):
	// the view needs the result. The deadline only keeps a wrong server
	// from hanging the test.
	askCtx, cancelAsk := context.WithTimeout(ctx, 20*time.Second)
	defer cancelAsk()
	res := callTool(askCtx, t, c, ToolInteractiveFeedback, map[string]any{
		"message": "Deploy **now**?", "predefinedOptions": []string{"yes", "no"}, "wait": true,
	}, nil)
	o := outcome(t, res)
	q, ok := appQuestion(t, res)
	if !ok || q.Token == "" || q.SessionID != o.SessionID || q.View.Status != store.StatusPending ||
		!strings.Contains(q.View.MessageHTML, "<strong>now</strong>") || len(q.View.Options) != 2 {
		t.Fatalf("app question %+v (outcome %+v)", q, o)
	}
	if _, tok := splitLink(t, o.FeedbackURL); tok != q.Token {
		t.Fatal("the view's token is not the link's")
	}
	for _, want := range []string{"shown to the user in this conversation", "returns at once", "get_feedback_result", o.FeedbackURL} {
		if !strings.Contains(text(res), want) {
			t.Fatalf("text %q lacks %q", text(res), want)
		}
	}

	v := pageViewOf(t, callTool(ctx, t, c, ToolAppView, map[string]any{"sessionId": q.SessionID, "token": q.Token}, nil))
	if v.Status != store.StatusPending || v.SessionID != q.SessionID {
		t.Fatalf("view %+v", v)
	}

	// The agent waits; the person answers in the view.
	waited := make(chan *mcp.CallToolResult, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = ToolGetFeedbackResult
		req.Params.Arguments = map[string]any{"sessionId": q.SessionID, "wait": 60}
		r, err := c.CallTool(ctx, req)
		if err != nil {
			r = mcp.NewToolResultError(err.Error())
		}
		waited <- r
	}()
	// Bounded poll until the wait is in flight (the owner's only call).
	owner := store.Owner{Subject: "alice"}
	for deadline := time.Now().Add(10 * time.Second); !e.callsInFlight(owner, 1); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("get_feedback_result never started waiting")
		}
	}
	answer := map[string]any{"sessionId": q.SessionID, "token": q.Token,
		"answer": map[string]any{"selectedOptions": []string{"yes"}, "nonce": "n-1"}}
	v = pageViewOf(t, callTool(ctx, t, c, ToolAppAnswer, answer, nil))
	if v.Status != store.StatusSubmitted || v.Result == nil || v.Result.Via != feedback.ViaApp {
		t.Fatalf("answer view %+v", v)
	}
	got := outcome(t, recv(t, waited, "get_feedback_result"))
	if got.Status != store.StatusSubmitted || got.Result == nil || len(got.Result.SelectedOptions) != 1 || got.Result.SelectedOptions[0] != "yes" {
		t.Fatalf("the waiting agent got %+v", got)
	}
	// The same answer again (a retry) succeeds again; another one is refused.
	if v := pageViewOf(t, callTool(ctx, t, c, ToolAppAnswer, answer, nil)); v.Status != store.StatusSubmitted {
		t.Fatalf("retry: %+v", v)
	}
	other := map[string]any{"sessionId": q.SessionID, "token": q.Token,
		"answer": map[string]any{"selectedOptions": []string{"no"}, "nonce": "n-2"}}
	if r := callTool(ctx, t, c, ToolAppAnswer, other, nil); !r.IsError || !strings.Contains(text(r), "already been answered") {
		t.Fatalf("second answer: %v %q", r.IsError, text(r))
	}
}

// A client without MCP Apps sees exactly what it saw before: four tools,
// no _meta, no extension, and results without the view's part.
func TestMCPAppsPlainClient(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	for _, exts := range []map[string]any{
		nil,
		{UIExtension: map[string]any{"mimeTypes": []any{"text/uri-list"}}}, // not HTML views
		{UIExtension: "yes"}, // not an object
	} {
		c, init := e.connectWith(mint(t, "alice"), exts)
		if _, ok := init.Capabilities.Extensions[UIExtension]; ok {
			t.Fatalf("%v: the extension is advertised to a client that did not declare it", exts)
		}
		tools := toolsByName(t, c)
		if len(tools) != 4 {
			t.Fatalf("%v: %d tools, want the 4 model tools", exts, len(tools))
		}
		for name, tool := range tools {
			if tool.Meta != nil {
				t.Fatalf("%v: %s has _meta %+v", exts, name, tool.Meta.AdditionalFields)
			}
		}
		res := callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "Ship it?"}, nil)
		o := outcome(t, res)
		if _, ok := appQuestion(t, res); ok || res.Meta != nil {
			t.Fatalf("%v: plain result carries _meta %+v", exts, res.Meta)
		}
		if !strings.Contains(text(res), "Show this link to the user now") || !strings.Contains(text(res), o.FeedbackURL) {
			t.Fatalf("%v: text changed: %q", exts, text(res))
		}
	}
}

// With link_to_agent off the view gets the question but no token: nothing
// of the capability reaches the agent's client.
func TestMCPAppsWithheldLink(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	e.svc.cfg.WithholdLink = true
	c, _ := e.connectWith(mint(t, "alice"), appsCaps)
	res := callTool(context.Background(), t, c, ToolInteractiveFeedback, map[string]any{"message": "Pay the invoice?"}, nil)
	q, ok := appQuestion(t, res)
	if !ok || q.Token != "" || q.View.Status != store.StatusPending {
		t.Fatalf("app question %+v", q)
	}
	b, _ := json.Marshal(res)
	if strings.Contains(string(b), "#t=") || strings.Contains(string(b), `"token"`) || strings.Contains(string(b), "/feedback/") {
		t.Fatalf("result with the link withheld: %s", b)
	}
}

// The app-only tools authorise every call with the question's capability
// token, whoever calls them, and say what was wrong.
func TestMCPAppsToolsHostileInput(t *testing.T) {
	e := newMCPEnv(t, store.NewMemory())
	alice := mint(t, "alice")
	c, _ := e.connectWith(alice, appsCaps)
	ctx := context.Background()
	ask := func(msg string, opts ...string) AppQuestion {
		args := map[string]any{"message": msg}
		if len(opts) > 0 {
			args["predefinedOptions"] = opts
		}
		q, ok := appQuestion(t, callTool(ctx, t, c, ToolInteractiveFeedback, args, nil))
		if !ok {
			t.Fatal("no app question")
		}
		return q
	}
	q := ask("Which?", "a", "b")
	other := ask("Other?")
	// bob's question, and his token for it: alice's connection may not use it.
	cb, _ := e.connectWith(mint(t, "bob"), appsCaps)
	bq, _ := appQuestion(t, callTool(ctx, t, cb, ToolInteractiveFeedback, map[string]any{"message": "Bob's"}, nil))

	id, tok := q.SessionID, q.Token
	args := func(format string, a ...any) string { return fmt.Sprintf(format, a...) }
	notFound := "no question has this sessionId and token"
	cases := []struct {
		name, tool, args, want string
	}{
		{"no arguments", ToolAppView, `{}`, "sessionId is required"},
		{"null arguments", ToolAppAnswer, `null`, "sessionId is required"},
		{"array", ToolAppView, `[1]`, "JSON object"},
		{"unknown field", ToolAppView, args(`{"sessionId":%q,"token":%q,"x":1}`, id, tok), `unknown field "x"`},
		{"answer on the read tool", ToolAppView, args(`{"sessionId":%q,"token":%q,"answer":{}}`, id, tok), `unknown field "answer"`},
		{"missing token", ToolAppView, args(`{"sessionId":%q}`, id), "token is required"},
		{"null token", ToolAppAnswer, args(`{"sessionId":%q,"token":null,"answer":{}}`, id), "token is required"},
		{"empty token", ToolAppView, args(`{"sessionId":%q,"token":""}`, id), "token is empty"},
		{"numeric token", ToolAppView, args(`{"sessionId":%q,"token":7}`, id), "token must be a string"},
		{"huge token", ToolAppView, args(`{"sessionId":%q,"token":%q}`, id, strings.Repeat("A", 300)), "longer than 256"},
		{"forged token", ToolAppView, args(`{"sessionId":%q,"token":"AAAAAAAAAAAAAAAAAAAAAAAAAA"}`, id), notFound},
		{"forged token, answer", ToolAppAnswer, args(`{"sessionId":%q,"token":"AAAAAAAAAAAAAAAAAAAAAAAAAA","answer":{"selectedOptions":["a"]}}`, id), notFound},
		{"another question's token", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{"selectedOptions":["a"]}}`, id, other.Token), notFound},
		{"another owner's question", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{"freeText":"mine"}}`, bq.SessionID, bq.Token), notFound},
		{"malformed id", ToolAppView, args(`{"sessionId":"../../x","token":%q}`, tok), notFound},
		{"numeric id", ToolAppView, args(`{"sessionId":1,"token":%q}`, tok), "sessionId must be a string"},
		{"missing answer", ToolAppAnswer, args(`{"sessionId":%q,"token":%q}`, id, tok), "answer is required"},
		{"answer not an object", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":"yes"}`, id, tok), "answer must be a JSON object"},
		{"empty answer", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{}}`, id, tok), "answer: select an option or write an answer"},
		{"unknown option", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{"selectedOptions":["c"]}}`, id, tok), "answer:"},
		{"two options, single select", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{"selectedOptions":["a","b"]}}`, id, tok), "answer:"},
		{"unknown answer field", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{"via":"owner"}}`, id, tok), `answer: unknown field "via"`},
		{"script in free text is just text, but too long", ToolAppAnswer, args(`{"sessionId":%q,"token":%q,"answer":{"freeText":%q}}`, id, tok, strings.Repeat("<script>", 2000)), "answer:"},
	}
	r := e.rawAppsSession(alice)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			isErr, msg, rpcErr := r.callRaw(tc.tool, tc.args)
			if rpcErr || !isErr || !strings.Contains(msg, tc.want) {
				t.Fatalf("%s %s: isError=%v rpcErr=%v %q, want a tool error containing %q", tc.tool, tc.args, isErr, rpcErr, msg, tc.want)
			}
		})
	}
	// None of that answered anything.
	if v := pageViewOf(t, callTool(ctx, t, c, ToolAppView, map[string]any{"sessionId": id, "token": tok}, nil)); v.Status != store.StatusPending {
		t.Fatalf("after the hostile calls: %+v", v)
	}
	if v := pageViewOf(t, callTool(ctx, t, cb, ToolAppView, map[string]any{"sessionId": bq.SessionID, "token": bq.Token}, nil)); v.Status != store.StatusPending {
		t.Fatalf("bob's question after the hostile calls: %+v", v)
	}

	// Closed questions say so.
	if r := callTool(ctx, t, c, ToolCancelFeedback, map[string]any{"sessionId": other.SessionID}, nil); r.IsError {
		t.Fatal(text(r))
	}
	closed := callTool(ctx, t, c, ToolAppAnswer, map[string]any{"sessionId": other.SessionID, "token": other.Token, "answer": map[string]any{"freeText": "late"}}, nil)
	if !closed.IsError || !strings.Contains(text(closed), "closed") {
		t.Fatalf("answer to a withdrawn question: %v %q", closed.IsError, text(closed))
	}
	if v := pageViewOf(t, callTool(ctx, t, c, ToolAppView, map[string]any{"sessionId": other.SessionID, "token": other.Token}, nil)); v.Status != store.StatusCancelled {
		t.Fatalf("view of a withdrawn question: %+v", v)
	}
}

// rawAppsSession is rawSession for a client that declares MCP Apps.
func (e *mcpEnv) rawAppsSession(tok string) *rpc {
	r := &rpc{t: e.t, url: e.srv.URL + "/mcp", tok: tok}
	resp := r.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"extensions":{"io.modelcontextprotocol/ui":{"mimeTypes":["text/html;profile=mcp-app"]}}},"clientInfo":{"name":"raw","version":"0"}}}`, nil)
	if resp.code != http.StatusOK {
		e.t.Fatalf("initialize: %d %s", resp.code, resp.body)
	}
	r.session = resp.header.Get("Mcp-Session-Id")
	r.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil)
	return r
}
