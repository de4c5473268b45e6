package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/ui"
)

// MCP Apps (the io.modelcontextprotocol/ui extension, spec 2026-01-26):
// in a host that renders MCP Apps, interactive_feedback shows the question
// inside the conversation (ui/app/), and the person answers there.
//
//   - A client that declares the extension at initialize sees it
//     advertised back, sees interactive_feedback's _meta.ui.resourceUri and
//     the two app-only tools below; any other client sees today's tool list
//     and today's results, nothing more (filterTools).
//   - The view is the resource ui://feedback/question: one static,
//     self-contained HTML document (no external domains: the host's sandbox
//     cannot reach this site anyway).
//   - The host hands the view the tool result. Its _meta carries the
//     question's id, its capability token and the question as the answer
//     page shows it. _meta is the part of a result MCP Apps hosts keep out of
//     the model's context; the token is there only when link_to_agent is on,
//     i.e. when the agent gets the same token in the link anyway. With
//     link_to_agent off the view shows the question without a way to answer.
//   - The view answers and refreshes through two tools with visibility
//     ["app"]. Hosts hide such tools from the model, but only hosts enforce
//     that, so both authorise themselves: each call needs the question's
//     capability token (and the caller's token must be the asker's). An MCP
//     session alone is never enough.
//   - A call with wait: true from such a client returns at once: MCP Apps
//     hands a view the result only when the call completes, so a blocked
//     call would leave the person nothing to answer. The agent then waits
//     with get_feedback_result, as without wait.

// Names of the MCP Apps parts.
const (
	// UIExtension is the MCP Apps extension's identifier.
	UIExtension = "io.modelcontextprotocol/ui"
	// AppResourceURI is the view of a question.
	AppResourceURI = "ui://feedback/question"
	// ToolAppView reads a question's current state for the view.
	ToolAppView = "feedback_app_view"
	// ToolAppAnswer submits the person's answer from the view.
	ToolAppAnswer = "feedback_app_answer"
	// AppMetaKey is the key, in interactive_feedback's result _meta, of
	// what the view needs.
	AppMetaKey = "mcpfeedback/question"
	// appPollSeconds is how often the view re-reads an open question, so
	// that an answer given elsewhere, a withdrawal or the expiry shows.
	appPollSeconds = 5
)

// AppQuestion is what interactive_feedback hands the view in its result's
// _meta[AppMetaKey].
type AppQuestion struct {
	SessionID string `json:"sessionId"`
	// Token is the capability token; absent with link_to_agent off.
	Token       string   `json:"token,omitempty"`
	View        PageView `json:"view"`
	PollSeconds int      `json:"pollSeconds"`
}

func appToolMeta(visibility ...string) *mcp.Meta {
	ui := map[string]any{"resourceUri": AppResourceURI}
	if len(visibility) > 0 {
		ui["visibility"] = visibility
	}
	return mcp.NewMetaFromMap(map[string]any{"ui": ui})
}

// appsOptions are the server options MCP Apps needs.
func (m *MCP) appsOptions(hooks *server.Hooks) []server.ServerOption {
	hooks.AddAfterInitialize(advertiseApps)
	return []server.ServerOption{
		server.WithResourceCapabilities(false, false),
		server.WithToolFilter(filterTools),
	}
}

// advertiseApps answers the extension in the initialize result when, and
// only when, the client declared it.
func advertiseApps(_ context.Context, _ any, req *mcp.InitializeRequest, res *mcp.InitializeResult) {
	if !declaresApps(req.Params.Capabilities) {
		return
	}
	ext := map[string]any{}
	for k, v := range res.Capabilities.Extensions {
		ext[k] = v
	}
	ext[UIExtension] = map[string]any{"mimeTypes": []string{ui.AppMIMEType}}
	res.Capabilities.Extensions = ext
}

// declaresApps reports whether client capabilities include MCP Apps with
// HTML views: the extension object, with mimeTypes naming ours if it names
// any.
func declaresApps(c mcp.ClientCapabilities) bool {
	v, ok := c.Extensions[UIExtension]
	if !ok {
		return false
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return false
	}
	types, ok := obj["mimeTypes"]
	if !ok {
		return true
	}
	list, ok := types.([]any)
	if !ok {
		return false
	}
	for _, t := range list {
		if s, ok := t.(string); ok && strings.EqualFold(s, ui.AppMIMEType) {
			return true
		}
	}
	return false
}

// appsClient reports whether this call's MCP session declared MCP Apps.
// Sessions this instance does not hold (opened on another one) read as
// not: they get the plain result, which works everywhere.
func appsClient(ctx context.Context) bool {
	cs, ok := server.ClientSessionFromContext(ctx).(server.SessionWithClientInfo)
	return ok && declaresApps(cs.GetClientCapabilities())
}

// filterTools shows clients without MCP Apps the tool list as it was
// before the extension: no app-only tools (they would be offered to the
// model) and no _meta.ui on interactive_feedback.
func filterTools(ctx context.Context, tools []mcp.Tool) []mcp.Tool {
	if appsClient(ctx) {
		return tools
	}
	out := tools[:0:0]
	for _, t := range tools {
		if t.Meta == nil || t.Meta.AdditionalFields["ui"] == nil {
			out = append(out, t)
			continue
		}
		uiMeta, _ := t.Meta.AdditionalFields["ui"].(map[string]any)
		if vis, ok := uiMeta["visibility"].([]string); ok && !slices.Contains(vis, "model") {
			continue
		}
		rest := map[string]any{}
		for k, v := range t.Meta.AdditionalFields {
			if k != "ui" {
				rest[k] = v
			}
		}
		t.Meta = nil
		if len(rest) > 0 {
			t.Meta = mcp.NewMetaFromMap(rest)
		}
		out = append(out, t)
	}
	return out
}

// addApps registers the view resource and the app-only tools.
func (m *MCP) addApps() {
	m.server.AddResource(mcp.NewResource(AppResourceURI, "Question view",
		mcp.WithResourceDescription("The question asked with interactive_feedback, shown inside the conversation by hosts that render MCP Apps, where the user can answer it."),
		mcp.WithMIMEType(ui.AppMIMEType),
	), func(context.Context, mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		return []mcp.ResourceContents{mcp.TextResourceContents{
			URI:      AppResourceURI,
			MIMEType: ui.AppMIMEType,
			Text:     ui.AppHTML(),
			Meta: map[string]any{"ui": map[string]any{
				// Everything is inline: no network, no remote resources.
				"csp":           map[string]any{"connectDomains": []string{}, "resourceDomains": []string{}},
				"prefersBorder": true,
			}},
		}}, nil
	})

	appArgs := []mcp.ToolOption{
		mcp.WithString("sessionId", mcp.Required(), mcp.Description("The question's id.")),
		mcp.WithString("token", mcp.Required(), mcp.Description("The question's capability token, from the tool result the view received.")),
	}
	view := mcp.NewTool(ToolAppView, append([]mcp.ToolOption{
		mcp.WithDescription("For the question view only (MCP Apps): the question's current state, as the answer page shows it. Needs the question's capability token."),
		annotations("Read a question for its view", true, false, true, false),
	}, appArgs...)...)
	view.Meta = appToolMeta("app")
	m.server.AddTool(view, m.appView)

	answer := mcp.NewTool(ToolAppAnswer, append([]mcp.ToolOption{
		mcp.WithDescription("For the question view only (MCP Apps): the person's answer, given in the view. Needs the question's capability token; accepted once."),
		mcp.WithObject("answer", mcp.Required(), mcp.Description(`{"selectedOptions":[…],"freeText":"…","nonce":"…"}, as the REST submit takes it.`)),
		annotations("Answer a question from its view", false, false, true, false),
	}, appArgs...)...)
	answer.Meta = appToolMeta("app")
	m.server.AddTool(answer, m.appAnswer)
}

// appSession is how both app-only tools start: strict arguments, then the
// question, if the token is its capability token and the caller's token is
// its asker's. Anything else reads as one not-found.
func appSession(ctx context.Context, req mcp.CallToolRequest, withAnswer bool, peek bool) (*mcpRequest, *validate.AppArgs, *store.Session, *mcp.CallToolResult) {
	rq, fail := begin(ctx)
	if fail != nil {
		return nil, nil, nil, fail
	}
	raw, fail := rawArgs(req)
	if fail != nil {
		return nil, nil, nil, fail
	}
	args, verr := validate.DecodeAppArgs(raw, withAnswer)
	if verr != nil {
		return nil, nil, nil, toolError("%s", verr.Message)
	}
	read := rq.svc.core.GetByToken
	if peek {
		read = rq.svc.core.PeekByToken
	}
	sess, err := read(ctx, args.SessionID, args.Token)
	if err == nil && sess.Owner != OwnerOf(rq.claims) {
		err = store.ErrNotFound
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, nil, toolError("no question has this sessionId and token: the token is wrong, or the question is unknown, gone or not asked with this connection's credentials")
		}
		return nil, nil, nil, storeToolError(rq, "get", err)
	}
	return rq, args, sess, nil
}

func (m *MCP) appView(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	rq, _, sess, fail := appSession(ctx, req, false, false)
	if fail != nil {
		return fail, nil
	}
	return mcp.NewToolResultStructured(PageViewOf(sess, rq.svc.cfg.Now().UTC()), "Status: "+string(sess.Status)+"."), nil
}

func (m *MCP) appAnswer(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	rq, args, sess, fail := appSession(ctx, req, true, true)
	if fail != nil {
		return fail, nil
	}
	sub, verr := validate.DecodeSubmit(args.Answer)
	if verr != nil {
		return toolError("answer: %s", verr.Message), nil
	}
	res, err := rq.svc.core.Answer(ctx, sess, sub, feedback.Via{How: feedback.ViaApp})
	if err != nil {
		var ve *validate.Error
		switch {
		case errors.As(err, &ve):
			return toolError("answer: %s", ve.Message), nil
		case errors.Is(err, store.ErrConflict):
			return toolError("this question has already been answered (on its page or elsewhere); the first answer counts"), nil
		case errors.Is(err, store.ErrGone):
			return toolError("this question is closed: it expired or the agent withdrew it"), nil
		}
		return storeToolError(rq, "submit", err), nil
	}
	rq.svc.log.Debug("mcp: question answered in its MCP Apps view", zap.String("session", res.ID))
	return mcp.NewToolResultStructured(PageViewOf(res, rq.svc.cfg.Now().UTC()), "Answer sent."), nil
}

// appOutcome is interactive_feedback's result for a client that renders
// MCP Apps: at once, whether or not the agent asked to wait, with what the
// view needs in _meta (see the top of this file).
func appOutcome(rq *mcpRequest, sess *store.Session, created *feedback.Asked, link string, wait bool) *mcp.CallToolResult {
	out := Outcome{SessionID: sess.ID, Status: sess.Status, FeedbackURL: link, ExpiresAt: sess.ExpiresAt}
	var b strings.Builder
	fmt.Fprintf(&b, "Question created (sessionId %s). It is shown to the user in this conversation", sess.ID)
	if link != "" {
		b.WriteString(", where they can answer it; they can also answer at " + link + ".")
	} else {
		b.WriteString("; they answer through the link this server sends them.")
	}
	if wait {
		b.WriteString(" This call returns at once even though you asked to wait: the user needs this result in the conversation to answer.")
	}
	fmt.Fprintf(&b, " Call get_feedback_result with {\"sessionId\":%q,\"wait\":%d} to wait for the answer. The question expires at %s.",
		sess.ID, secondsLeft(sess.ExpiresAt), sess.ExpiresAt.Format(time.RFC3339))
	res := mcp.NewToolResultStructured(out, b.String())
	q := AppQuestion{SessionID: sess.ID, View: PageViewOf(sess, rq.svc.cfg.Now().UTC()), PollSeconds: appPollSeconds}
	if !rq.svc.cfg.WithholdLink {
		q.Token = linkToken(created.Link)
	}
	res.Meta = mcp.NewMetaFromMap(map[string]any{AppMetaKey: q})
	return res
}

// linkToken is the capability token in an answer link's fragment (#t=…).
func linkToken(link string) string {
	u, err := url.Parse(link)
	if err != nil {
		return ""
	}
	tok, _ := strings.CutPrefix(u.Fragment, "t=")
	return tok
}
