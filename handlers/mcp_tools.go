package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Tool names.
const (
	ToolInteractiveFeedback = "interactive_feedback"
	ToolGetFeedbackResult   = "get_feedback_result"
	ToolCheckFeedbackStatus = "check_feedback_status"
	ToolCancelFeedback      = "cancel_feedback"
)

// Outcome is the structured result of interactive_feedback and
// get_feedback_result.
type Outcome struct {
	SessionID   string        `json:"sessionId"`
	Status      store.Status  `json:"status"`
	FeedbackURL string        `json:"feedbackUrl,omitempty"`
	ExpiresAt   time.Time     `json:"expiresAt"`
	Result      *store.Result `json:"result,omitempty"`
	// Warnings say what the create changed rather than refused.
	Warnings []string `json:"warnings,omitempty"`
}

// SessionState is the structured result of check_feedback_status and
// cancel_feedback: the same type as the REST status.
type SessionState = feedback.State

// The output schemas are written out rather than derived from the structs:
// derivation would describe time.Time as an object, and a tag it cannot
// parse silently drops the schema. TestToolSchemas keeps them in step.
const statusSchema = `{"type":"string","enum":["pending","submitted","expired","cancelled"],
 "description":"pending: not answered yet; submitted: the user answered; expired: nobody answered in time; cancelled: the question was withdrawn"}`

var outcomeSchema = json.RawMessage(`{"type":"object","properties":{
 "sessionId":{"type":"string","description":"Id of the question; pass it to get_feedback_result, check_feedback_status or cancel_feedback."},
 "status":` + statusSchema + `,
 "feedbackUrl":{"type":"string","description":"Link where the user answers. Show it to them. It carries a secret: do not put it anywhere public."},
 "expiresAt":{"type":"string","format":"date-time","description":"When the question closes if unanswered."},
 "result":{"type":"object","description":"The user's answer, when status is submitted.","properties":{
   "selectedOptions":{"type":"array","items":{"type":"string"},"description":"The predefined options the user picked."},
   "freeText":{"type":"string","description":"What the user wrote, if anything."},
   "answers":{"type":"object","description":"For a form of questions: {question id: answer}, each of its question's type (single: string, multi: array of strings, text: string, boolean: boolean, number: number). Unanswered optional questions are absent."},
   "via":{"type":"string","description":"How the answer arrived: link, owner, elicitation, or timeout (the question's onTimeout policy chose it; no person did)."},
   "byTimeout":{"type":"boolean","description":"true: nobody answered; the onTimeout choose policy picked selectedOptions when the question expired."},
   "submittedAt":{"type":"string","format":"date-time"}},
  "required":["selectedOptions","freeText","submittedAt"]},
 "warnings":{"type":"array","items":{"type":"string"},"description":"What the server changed in your request instead of refusing it (e.g. a clamped timeout)."}},
 "required":["sessionId","status","expiresAt"]}`)

// optionItem is the schema of one predefined option: a label, or a label
// with a description and a recommendation.
var optionItem = map[string]any{"anyOf": []any{
	map[string]any{"type": "string"},
	map[string]any{"type": "object", "properties": map[string]any{
		"label":       map[string]any{"type": "string", "description": "What the user picks, and what the answer carries."},
		"description": map[string]any{"type": "string", "description": "Shown under the label: what this option means or costs (at most 500 characters)."},
		"recommended": map[string]any{"type": "boolean", "description": "Mark the one option you recommend (at most one)."},
	}, "required": []string{"label"}, "additionalProperties": false},
}}

// questionItem is the schema of one question of a form.
var questionItem = map[string]any{"type": "object", "properties": map[string]any{
	"id":       map[string]any{"type": "string", "description": "Key of this question's answer in result.answers: letters, digits, _ or -."},
	"message":  map[string]any{"type": "string", "description": "The question, in Markdown."},
	"kind":     map[string]any{"type": "string", "enum": []string{"single", "multi", "text", "boolean", "number"}},
	"options":  map[string]any{"type": "array", "items": optionItem, "description": "For single and multi: the choices."},
	"required": map[string]any{"type": "boolean", "description": "The user must answer it. Default false."},
	"default":  map[string]any{"description": "The value the form starts with, of the kind's type."},
	"min":      map[string]any{"type": "number", "description": "number: smallest value; text: fewest characters; multi: fewest picks."},
	"max":      map[string]any{"type": "number", "description": "number: largest value; text: most characters; multi: most picks."},
}, "required": []string{"id", "message", "kind"}, "additionalProperties": false}

var stateSchema = json.RawMessage(`{"type":"object","properties":{
 "sessionId":{"type":"string"},
 "status":` + statusSchema + `,
 "createdAt":{"type":"string","format":"date-time"},
 "expiresAt":{"type":"string","format":"date-time","description":"When the question closes if unanswered."},
 "updatedAt":{"type":"string","format":"date-time"}},
 "required":["sessionId","status","createdAt","expiresAt","updatedAt"]}`)

func annotations(title string, readOnly, destructive, idempotent, openWorld bool) mcp.ToolOption {
	return mcp.WithToolAnnotation(mcp.ToolAnnotation{
		Title:           title,
		ReadOnlyHint:    mcp.ToBoolPtr(readOnly),
		DestructiveHint: mcp.ToBoolPtr(destructive),
		IdempotentHint:  mcp.ToBoolPtr(idempotent),
		OpenWorldHint:   mcp.ToBoolPtr(openWorld),
	})
}

func sessionIDArg() mcp.ToolOption {
	return mcp.WithString("sessionId", mcp.Required(),
		mcp.Description("The sessionId that interactive_feedback returned."))
}

// Tools lists the tool definitions (for documentation and tests).
func (m *MCP) Tools() []mcp.Tool {
	ts := m.server.ListTools()
	out := make([]mcp.Tool, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Tool)
	}
	return out
}

func (m *MCP) addTools() {
	ask := mcp.NewTool(ToolInteractiveFeedback,
		mcp.WithDescription(`Ask the user (a person) a question and get their answer. Use it when you need a decision, a confirmation or information that only the user has; not for questions you can answer yourself.
The user answers on a web page, possibly on another device. Without wait, this returns at once with a feedbackUrl: show that link to the user, then call get_feedback_result with the sessionId and wait to receive the answer. With wait: true, this call itself blocks until the user answers or the question expires (send a progressToken and allow a long timeout; progress is reported at least every 15 seconds).
In a host that shows MCP Apps, the question also appears in the conversation for the user to answer there, and this returns at once even with wait: then call get_feedback_result with wait.
If the result says expired, the user is away: continue with your best judgement and do not ask again.`),
		mcp.WithString("message", mcp.Required(),
			mcp.Description("The question, in Markdown. Make it self-contained: the user may read it away from your context. At most 1000 characters by default.")),
		mcp.WithArray("predefinedOptions", mcp.Items(optionItem),
			mcp.Description("Answers the user can pick from (at most 10 by default, each label at most 100 characters, no duplicates): strings, or {label, description, recommended} objects to explain each and mark the one you recommend. The answer carries labels. Omit for a free-text question.")),
		mcp.WithBoolean("preselectRecommended",
			mcp.Description("Start the user's form with the recommended option already selected. Default false: nothing is chosen for them.")),
		mcp.WithArray("questions", mcp.Items(questionItem),
			mcp.Description("Several questions in one form (at most 10 by default) instead of predefinedOptions; message is then the form's introduction. The answer is result.answers {id: value}, typed by kind.")),
		mcp.WithArray("images", mcp.Items(map[string]any{"type": "object", "properties": map[string]any{
			"data":      map[string]any{"type": "string", "contentEncoding": "base64", "description": "The image's bytes, base64."},
			"mediaType": map[string]any{"type": "string", "enum": validate.ImageTypes, "description": "Must match the bytes. (An MCP image content block's type and mimeType are accepted too.)"},
			"alt":       map[string]any{"type": "string", "description": "What the image shows, for people who cannot see it (at most 300 characters)."},
		}, "required": []string{"data"}}),
			mcp.Description("Screenshots or diagrams the question is about, shown to the user on the answer page: PNG, JPEG, WebP or GIF, at most 4, each at most 1 MiB (this transport's 256 KiB message limit bounds them further).")),
		mcp.WithObject("onTimeout",
			mcp.Properties(map[string]any{
				"action": map[string]any{"type": "string", "enum": []string{"expire", "choose", "keep"}},
				"option": map[string]any{"type": "string", "description": "For choose: the label of one of predefinedOptions."},
			}),
			mcp.Description(`What happens when timeout passes unanswered. expire (default): status expired. choose: the question ends with option as the answer, marked byTimeout (the user did not choose it). keep: your wait ends at timeout with status pending, and the question stays open for the user up to the server's longest timeout; check later with get_feedback_result.`)),
		mcp.WithInteger("timeout",
			mcp.Description("Seconds the question stays open; by default from 30 to 3600, default 300 (a value outside the range is moved into it, with a warning). When it passes unanswered, onTimeout decides.")),
		mcp.WithObject("metadata",
			mcp.Description("Optional JSON object (at most 2 KiB) kept with the question, e.g. what task it belongs to.")),
		mcp.WithBoolean("multiSelect",
			mcp.Description("Let the user pick several predefinedOptions. Default false.")),
		mcp.WithBoolean("allowFreeText",
			mcp.Description("Let the user write their own answer besides the options. Default true; must be true when there are no options.")),
		mcp.WithBoolean("wait",
			mcp.Description("Block until the user answers, the question expires or it is cancelled. Default false (return the link at once).")),
		mcp.WithArray("to", mcp.WithStringItems(mcp.MinLength(1), mcp.MaxLength(validate.MaxPersonID)), mcp.MaxItems(validate.MaxTo), mcp.UniqueItems(true),
			mcp.Description("Other people to ask besides your user (their sign-in ids, at most 10): the question appears in their inboxes too and any of them may answer; the result's answeredBy says who. Only on sites that turned on allow_addressing; elsewhere it is refused.")),
		mcp.WithRawOutputSchema(outcomeSchema),
		annotations("Ask the user", false, false, false, true),
		// A task-augmented call (params.task) returns a task at once; see mcp_tasks.go.
		mcp.WithTaskSupport(mcp.TaskSupportOptional),
	)
	// Hosts that render MCP Apps show the question in the conversation
	// (mcp_apps.go); others never see this (filterTools).
	ask.Meta = appToolMeta()
	m.server.AddTool(ask, m.interactiveFeedback)

	m.server.AddTool(mcp.NewTool(ToolGetFeedbackResult,
		mcp.WithDescription(`Get the user's answer to a question asked with interactive_feedback. With wait (seconds), waits up to that long for the answer, and returns as soon as it arrives; the wait also ends when the question expires. Without wait, returns the current state at once.
status submitted: result holds the answer. pending: not answered yet, call again with wait. expired: the user is away; continue with your best judgement and do not ask again. cancelled: the question was withdrawn.`),
		sessionIDArg(),
		mcp.WithInteger("wait",
			mcp.Description("Seconds to wait for the answer, from 0 to 3600 by default; waiting stops at the question's expiry anyway. Send a progressToken and allow a long timeout: progress is reported at least every 15 seconds.")),
		mcp.WithRawOutputSchema(outcomeSchema),
		annotations("Get the user's answer", true, false, true, false),
		mcp.WithTaskSupport(mcp.TaskSupportOptional),
	), m.getFeedbackResult)

	m.server.AddTool(mcp.NewTool(ToolCheckFeedbackStatus,
		mcp.WithDescription(`Check the state of a question asked with interactive_feedback (pending, submitted, expired or cancelled) without reading the answer and without waiting.`),
		sessionIDArg(),
		mcp.WithRawOutputSchema(stateSchema),
		annotations("Check a question's status", true, false, true, false),
	), m.checkFeedbackStatus)

	m.server.AddTool(mcp.NewTool(ToolCancelFeedback,
		mcp.WithDescription(`Withdraw a question asked with interactive_feedback that you no longer need answered. The user can no longer answer it, and anything waiting for it sees status cancelled. Cancelling again is harmless; an answered or expired question cannot be cancelled.`),
		sessionIDArg(),
		mcp.WithRawOutputSchema(stateSchema),
		annotations("Withdraw a question", false, true, true, false),
	), m.cancelFeedback)
}

// toolError is a failed call the agent can act on (isError: true).
func toolError(format string, args ...any) *mcp.CallToolResult {
	return mcp.NewToolResultError(fmt.Sprintf(format, args...))
}

// storeToolError words a store error as the REST API does.
func storeToolError(rq *mcpRequest, op string, err error) *mcp.CallToolResult {
	_, code, msg := StoreStatus(err)
	if code == "store_unavailable" {
		rq.svc.log.Error("session store failed", zap.String("op", op), zap.String("via", "mcp"), zap.Error(err))
	}
	return mcp.NewToolResultError(msg)
}

// rawArgs returns the call's arguments as the JSON the client sent. Absent
// arguments are an empty object, so the error names the missing field.
func rawArgs(req mcp.CallToolRequest) ([]byte, *mcp.CallToolResult) {
	raw := []byte(req.Params.RawArguments)
	if len(raw) == 0 {
		if req.Params.Arguments == nil {
			return []byte("{}"), nil
		}
		b, err := json.Marshal(req.Params.Arguments)
		if err != nil {
			return nil, toolError("the arguments could not be read as JSON")
		}
		raw = b
	}
	if validate.NonImageBytes(raw) > validate.MaxBodyBytes {
		return nil, toolError("the arguments are larger than 64 KiB")
	}
	if strings.TrimSpace(string(raw)) == "null" {
		return []byte("{}"), nil
	}
	return raw, nil
}

// begin checks the scope the tool needs and returns the request state.
func begin(ctx context.Context, scopes ...string) (*mcpRequest, *mcp.CallToolResult) {
	rq := requestFrom(ctx)
	if rq == nil {
		// Only reachable if a transport is mounted without serve.
		return nil, toolError("this request was not authenticated")
	}
	for _, sc := range scopes {
		if !rq.claims.HasScope(sc) {
			return nil, toolError("this token's scope does not include %s, which %s needs", sc, "this tool")
		}
	}
	return rq, nil
}

func (m *MCP) interactiveFeedback(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	rq, fail := begin(ctx, auth.ScopeCreate)
	if fail != nil {
		return fail, nil
	}
	raw, fail := rawArgs(req)
	if fail != nil {
		return fail, nil
	}
	if res, handled := m.stateless(ctx, rq, req); handled {
		return res, nil
	}
	a, fail := m.ask(ctx, rq, raw)
	if fail != nil {
		return fail, nil
	}
	sess, link, wait, creq := a.sess, a.link, a.wait, a.req
	if appsClient(ctx) {
		return appOutcome(rq, sess, a.created, link, wait), nil
	}
	if !wait {
		out := Outcome{SessionID: sess.ID, Status: sess.Status, FeedbackURL: link, ExpiresAt: sess.ExpiresAt, Warnings: creq.Warnings}
		show := "Show this link to the user now so they can answer:\n" + link + "\n"
		if link == "" {
			show = "The user is notified by this server and answers there; you do not get a link.\n"
		}
		return mcp.NewToolResultStructured(out, fmt.Sprintf(
			"Question created (sessionId %s). %s"+
				"Then call get_feedback_result with {\"sessionId\":%q,\"wait\":%d} to wait for the answer. The question expires at %s.%s",
			sess.ID, show, sess.ID, secondsLeft(waitEnd(sess)), sess.ExpiresAt.Format(time.RFC3339), warningText(creq.Warnings))), nil
	}
	var warn func(*mcp.CallToolResult)
	if len(creq.Warnings) > 0 {
		warn = func(res *mcp.CallToolResult) {
			if out, ok := res.StructuredContent.(Outcome); ok {
				out.Warnings = creq.Warnings
				res.StructuredContent = out
			}
			res.Content = append(res.Content, mcp.NewTextContent(strings.TrimSpace(warningText(creq.Warnings))))
		}
	}
	return m.waitResult(ctx, rq, req, sess, waitEnd(sess), link, warn)
}

// ask validates interactive_feedback's arguments and creates the question
// (a plain call and a task-augmented one share it). wait is the argument.
func (m *MCP) ask(ctx context.Context, rq *mcpRequest, raw []byte) (*asked, *mcp.CallToolResult) {
	creq, style, extra, verr := decodeAsk(raw, rq.svc.core.Limits(), "wait")
	if verr != nil {
		return nil, toolError("%s", verr.Message)
	}
	wait, verr := validate.Bool(extra["wait"], "wait")
	if verr != nil {
		return nil, toolError("%s", verr.Message)
	}
	if wait && !rq.claims.HasScope(auth.ScopeRead) {
		return nil, toolError("this token's scope does not include %s, which waiting for the answer needs; call without wait", auth.ScopeRead)
	}
	owner := OwnerOf(rq.claims)
	created, err := rq.svc.core.Ask(ctx, owner, creq, rq.base, style)
	if err != nil {
		return nil, storeToolError(rq, "create", err)
	}
	a := &asked{sess: created.Session, link: created.Link, wait: wait, req: creq, created: created}
	if rq.svc.cfg.WithholdLink {
		a.link = "" // the person gets it from a notification, not from us
	}
	m.rememberLink(ctx, a.sess.ID, a.link)
	rq.svc.log.Debug("mcp: question created", zap.String("session", a.sess.ID), zap.String("sub", owner.Subject), zap.Bool("wait", wait))
	return a, nil
}

// asked is a question interactive_feedback created, and how it was asked.
type asked struct {
	sess    *store.Session
	link    string // "" when the agent does not get it (link_to_agent off)
	wait    bool
	req     *validate.CreateRequest
	created *feedback.Asked
}

func (m *MCP) getFeedbackResult(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if rq := requestFrom(ctx); rq != nil && rq.claims.HasScope(auth.ScopeRead) {
		if res, handled := m.stateless(ctx, rq, req); handled {
			return res, nil
		}
	}
	rq, args, sess, fail := sessionCall(ctx, req, auth.ScopeRead, true)
	if fail != nil {
		return fail, nil
	}
	link := m.link(ctx, sess.ID)
	if args.Wait == nil || *args.Wait == 0 || sess.Status.Terminal() {
		return answerResult(ctx, rq, sess, link, false), nil
	}
	return m.waitResult(ctx, rq, req, sess, time.Now().Add(*args.Wait), link, nil)
}

func (m *MCP) checkFeedbackStatus(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	_, _, sess, fail := sessionCall(ctx, req, auth.ScopeRead, false)
	if fail != nil {
		return fail, nil
	}
	text := fmt.Sprintf("Status: %s. %s", sess.Status, statusHint(sess))
	return mcp.NewToolResultStructured(stateOf(sess), text), nil
}

func (m *MCP) cancelFeedback(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	rq, _, sess, fail := sessionCall(ctx, req, auth.ScopeCreate, false)
	if fail != nil {
		return fail, nil
	}
	cancelled, err := rq.svc.core.Withdraw(ctx, OwnerOf(rq.claims), sess.ID)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return toolError("this question has already been answered, so it cannot be withdrawn; call get_feedback_result to read the answer"), nil
		}
		if errors.Is(err, store.ErrGone) {
			return toolError("this question has already expired, so there is nothing to withdraw"), nil
		}
		return storeToolError(rq, "cancel", err), nil
	}
	rq.svc.log.Debug("mcp: question cancelled by the agent", zap.String("session", sess.ID))
	return mcp.NewToolResultStructured(stateOf(cancelled), "The question is withdrawn (cancelled); the user can no longer answer it."), nil
}

func stateOf(s *store.Session) SessionState { return feedback.StateOf(s) }

// waitEnd is where the asker's own wait for sess ends: its deadline, or
// with onTimeout keep, the asker's timeout (the question stays open after).
func waitEnd(s *store.Session) time.Time {
	if f := s.Form; f != nil && !f.WaitUntil.IsZero() && f.WaitUntil.Before(s.ExpiresAt) {
		return f.WaitUntil
	}
	return s.ExpiresAt
}

func warningText(ws []string) string {
	if len(ws) == 0 {
		return ""
	}
	return " Note: " + strings.Join(ws, "; ") + "."
}

func secondsLeft(t time.Time) int64 {
	return max(int64(time.Until(t).Round(time.Second)/time.Second), 0)
}

// outcomeResult is the answer of interactive_feedback (when waiting) and
// get_feedback_result: the structured outcome and the words an agent needs.
// waited says a wait ran out while the question is still open.
func outcomeResult(s *store.Session, link string, waited bool) *mcp.CallToolResult {
	out := Outcome{SessionID: s.ID, Status: s.Status, ExpiresAt: s.ExpiresAt, Result: s.Result}
	if s.Status == store.StatusPending {
		out.FeedbackURL = link
	}
	var text string
	switch s.Status {
	case store.StatusSubmitted:
		text = answerText(s.Result)
	case store.StatusExpired:
		text = "The user did not answer before the question expired: they are away. Continue without their input, using your best judgement, and do not ask this question again."
		if r := s.Result; r != nil && r.ByTimeout {
			text = fmt.Sprintf("The user did not answer before the question expired: they are away. As the question's onTimeout policy says, the answer is %q, chosen by the timeout, not by the user. Continue with it, and do not ask this question again.", strings.Join(r.SelectedOptions, "; "))
		}
	case store.StatusCancelled:
		text = "This question was withdrawn (cancelled) before it was answered. Do not wait for it."
	case store.StatusPending:
		if !waitEnd(s).Before(s.ExpiresAt) || time.Now().Before(waitEnd(s)) {
			text = pendingText(s, link, waited)
			break
		}
		// onTimeout keep, past the asker's timeout.
		text = fmt.Sprintf("The user has not answered within your timeout. As onTimeout keep says, the question stays open for them until %s: continue with your work, and call get_feedback_result with {\"sessionId\":%q} later to see whether they answered.", s.ExpiresAt.Format(time.RFC3339), s.ID)
		if link != "" {
			text += " The user answers at " + link + "."
		}
	}
	return mcp.NewToolResultStructured(out, text)
}

// answerResult is outcomeResult for a tool call: an answer's attachments
// carry their download URLs under this request's base and follow the text
// as image content or resource links (attachmentContent).
func answerResult(ctx context.Context, rq *mcpRequest, s *store.Session, link string, waited bool) *mcp.CallToolResult {
	if s.Result == nil || len(s.Result.Attachments) == 0 {
		return outcomeResult(s, link, waited)
	}
	c := *s
	c.Result = withURLs(s.Result, rq.base, s.ID)
	res := outcomeResult(&c, link, waited)
	res.Content = append(res.Content, attachmentContent(ctx, rq.svc.core, &c)...)
	return res
}

// pendingText words an open question that is still within its wait.
func pendingText(s *store.Session, link string, waited bool) string {
	text := fmt.Sprintf("No answer yet; the question is open until %s (%d seconds from now).", s.ExpiresAt.Format(time.RFC3339), secondsLeft(s.ExpiresAt))
	if link != "" {
		text += " The user answers at " + link + "."
	}
	if waited {
		text += fmt.Sprintf(" Call get_feedback_result again with {\"sessionId\":%q,\"wait\":%d} to keep waiting.", s.ID, secondsLeft(waitEnd(s)))
	} else {
		text += fmt.Sprintf(" Call get_feedback_result with {\"sessionId\":%q,\"wait\":%d} to wait for it.", s.ID, secondsLeft(waitEnd(s)))
	}
	return text
}

func answerText(r *store.Result) string {
	if r == nil {
		return "The user answered."
	}
	var b strings.Builder
	b.WriteString("The user answered.")
	if len(r.SelectedOptions) > 0 {
		b.WriteString("\nSelected: " + strings.Join(r.SelectedOptions, "; "))
	}
	if len(r.Answers) > 0 {
		b.WriteString("\nAnswers (question id: value, also in structuredContent.result.answers):\n" + string(r.Answers))
	}
	if r.FreeText != "" {
		b.WriteString("\nTheir words:\n" + r.FreeText)
	}
	if len(r.Attachments) > 0 {
		b.WriteString(fmt.Sprintf("\nThey attached %d file(s), which follow (images inline, other files as links to GET with your bearer token):", len(r.Attachments)))
		for _, a := range r.Attachments {
			b.WriteString(fmt.Sprintf("\n- %s (%s, %s)", a.Name, a.MediaType, feedback.HumanBytes(int64(a.Bytes))))
		}
	}
	return b.String()
}

func statusHint(s *store.Session) string {
	switch s.Status {
	case store.StatusSubmitted:
		return "The user answered; call get_feedback_result to read the answer."
	case store.StatusExpired:
		return "Nobody answered in time: the user is away. Continue without their input and do not ask again."
	case store.StatusCancelled:
		return "The question was withdrawn."
	default:
		return fmt.Sprintf("Not answered yet; open until %s. Call get_feedback_result with wait to wait for the answer.", s.ExpiresAt.Format(time.RFC3339))
	}
}

// linkCache remembers the answer links this MCP session created: the link
// carries a capability token that is never stored, so only the session
// that created a question can repeat its link (in progress messages and
// pending results of get_feedback_result).
type linkCache struct {
	order []string
	urls  map[string]string
}

const maxLinksPerSession = 64

func (m *MCP) rememberLink(ctx context.Context, id, link string) {
	if link == "" {
		return
	}
	cs := server.ClientSessionFromContext(ctx)
	if cs == nil {
		return
	}
	s := m.session(cs.SessionID())
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.links.urls == nil {
		s.links.urls = map[string]string{}
	}
	if len(s.links.order) >= maxLinksPerSession {
		delete(s.links.urls, s.links.order[0])
		s.links.order = s.links.order[1:]
	}
	s.links.order = append(s.links.order, id)
	s.links.urls[id] = link
}

func (m *MCP) link(ctx context.Context, id string) string {
	cs := server.ClientSessionFromContext(ctx)
	if cs == nil {
		return ""
	}
	s := m.session(cs.SessionID())
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.links.urls[id]
}

// sessionCall is how every tool that names a session starts: the token's
// scope, strict {sessionId[, wait]} arguments (wait up to max_timeout when
// withWait), and the caller's own session (anyone else's reads as unknown).
func sessionCall(ctx context.Context, req mcp.CallToolRequest, scope string, withWait bool) (*mcpRequest, *validate.SessionArgs, *store.Session, *mcp.CallToolResult) {
	rq, fail := begin(ctx, scope)
	if fail != nil {
		return nil, nil, nil, fail
	}
	raw, fail := rawArgs(req)
	if fail != nil {
		return nil, nil, nil, fail
	}
	var maxWait time.Duration
	if withWait {
		maxWait = rq.svc.core.Limits().MaxTimeout
	}
	args, verr := validate.DecodeSessionArgs(raw, maxWait)
	if verr != nil {
		return nil, nil, nil, toolError("%s", verr.Message)
	}
	sess, err := rq.svc.core.Get(ctx, OwnerOf(rq.claims), args.SessionID)
	if err != nil {
		return nil, nil, nil, storeToolError(rq, "get", err)
	}
	return rq, args, sess, nil
}
