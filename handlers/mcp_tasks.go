package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// MCP Tasks (protocol 2025-11-25): a task-augmented tools/call of
// interactive_feedback or get_feedback_result returns a task at once, and
// the client polls tasks/get, then reads tasks/result.
//
// mcp-go v1.2.1 has task support, but it is not used: its task state is a
// map in one process bound to one MCP session with no TTL, its task context
// is cancelled when the creating request returns (mark3labs/mcp-go#897), and
// it notifies every session of every status change. Here the task methods
// are answered before mcp-go sees the request, and a task is a small record
// in the store's KV beside the question it belongs to, with the question's
// lifetime. A task needs no goroutine and no work of its own: its status is
// read from the question (the person answering is the work), and
// tasks/result is the core's Await. So any instance sharing the store
// answers for any task, after a reconnect or a reload, and a task is owned
// by the token's identity (iss+sub), not by an MCP session.

// Task methods and the status notification.
const (
	methodTasksGet    = "tasks/get"
	methodTasksResult = "tasks/result"
	methodTasksCancel = "tasks/cancel"
	methodTasksList   = "tasks/list"
	methodToolsCall   = "tools/call"
)

// taskPollInterval is the pollInterval a task suggests. A person takes
// seconds to minutes to answer, so polling faster only costs reads; a
// client that wants the answer the moment it arrives calls tasks/result,
// which blocks.
const taskPollInterval = 2 * time.Second

// taskListPage is how many tasks one tasks/list page holds.
const taskListPage = 50

// relatedTaskKey is the _meta key that ties a result to its task.
const relatedTaskKey = "io.modelcontextprotocol/related-task"

// KV key prefixes. A task id is random (no question id in it, so a task
// id reveals nothing and cannot be guessed from a question).
const (
	kvTask       = "mcptask:"      // + task id → taskRecord
	kvOwnerTasks = "mcptasks:own:" // + owner hash → set of task ids
	kvQTasks     = "mcptasks:q:"   // + question id → set of task ids
	taskIDPrefix = "fbt-"          // task ids look like fbt-<random>
	maxTaskIDLen = len(taskIDPrefix) + 64
)

// taskRecord is what the store keeps of a task.
type taskRecord struct {
	ID       string    `json:"id"`
	Issuer   string    `json:"iss"`
	Subject  string    `json:"sub"`
	Question string    `json:"question"`
	Tool     string    `json:"tool"`
	Created  time.Time `json:"created"`
	// Until is when a get_feedback_result wait ends if the question is
	// still open then (zero for interactive_feedback: the question's own
	// deadline).
	Until time.Time `json:"until,omitzero"`
	// Expires is when the record goes (the question's record goes then too).
	Expires time.Time `json:"expires"`
	// Cancelled: tasks/cancel ended a wait task (an ask task's cancel
	// withdraws the question instead, which the question's status shows).
	Cancelled bool `json:"cancelled,omitempty"`
}

func (t *taskRecord) owner() store.Owner { return store.Owner{Issuer: t.Issuer, Subject: t.Subject} }

// ownerKey names an owner's task set without putting the identity (which
// may hold spaces) in a key.
func ownerKey(o store.Owner) string {
	h := sha256.Sum256([]byte(o.Issuer + "\x00" + o.Subject))
	return kvOwnerTasks + base64.RawURLEncoding.EncodeToString(h[:18])
}

// rpcMessage is one JSON-RPC message, as much of it as routing needs.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// rpcError is a JSON-RPC error answer.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
	// done: the task is already finished (tasks/cancel), which the
	// extension's cancel acknowledges rather than refuses.
	done bool
}

func invalidParams(format string, args ...any) *rpcError {
	return &rpcError{Code: mcp.INVALID_PARAMS, Message: fmt.Sprintf(format, args...)}
}

// taskRoute reports whether a message is one the task layer answers: a
// task method, or a task-augmented tools/call. Other messages go to mcp-go.
func taskRoute(body []byte) (*rpcMessage, bool) {
	var msg rpcMessage
	if err := json.Unmarshal(body, &msg); err != nil || len(msg.ID) == 0 || string(msg.ID) == "null" {
		return nil, false // batches, notifications, responses, junk: mcp-go's
	}
	switch msg.Method {
	case methodTasksGet, methodTasksResult, methodTasksCancel, methodTasksList, methodTasksUpdate:
		return &msg, true
	case methodToolsCall:
		var p struct {
			Task json.RawMessage `json:"task"`
		}
		if json.Unmarshal(msg.Params, &p) == nil && len(p.Task) > 0 && string(p.Task) != "null" {
			return &msg, true
		}
	}
	return nil, false
}

// countTaskCall counts a task-augmented tools/call: "task" once the task
// exists, "tool_error" when it could not be made.
func (m *MCP) countTaskCall(params json.RawMessage, e *rpcError) {
	outcome := "task"
	if e != nil {
		outcome = "tool_error"
	}
	m.opts.Observer.ToolCall(toolName(params), outcome)
}

// serveTask answers one task message on Streamable HTTP. ctx carries the
// request state (mcpRequest) and the client session, if any.
func (m *MCP) serveTask(ctx context.Context, w http.ResponseWriter, r *http.Request, rq *mcpRequest, msg *rpcMessage) {
	var (
		res any
		e   *rpcError
	)
	switch msg.Method {
	case methodToolsCall:
		res, e = m.createTask(ctx, rq, msg.Params)
		m.countTaskCall(msg.Params, e)
	case methodTasksGet:
		res, e = m.getTask(ctx, rq, msg.Params)
	case methodTasksCancel:
		res, e = m.cancelTask(ctx, rq, msg.Params)
	case methodTasksList:
		res, e = m.listTasks(ctx, rq, msg.Params)
	case methodTasksResult:
		m.taskResult(ctx, w, r, rq, msg)
		return
	}
	writeRPC(w, msg.ID, res, e)
}

// toolName is the name a tools/call names, if it is one of ours (metric
// labels must stay a small set).
func toolName(params json.RawMessage) string {
	var p struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(params, &p)
	switch p.Name {
	case ToolInteractiveFeedback, ToolGetFeedbackResult, ToolCheckFeedbackStatus, ToolCancelFeedback:
		return p.Name
	}
	return "unknown"
}

// writeRPC writes a JSON-RPC answer as application/json.
func writeRPC(w http.ResponseWriter, id json.RawMessage, res any, e *rpcError) {
	b, err := rpcBytes(id, res, e)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "internal_error", "the answer could not be encoded")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func rpcBytes(id json.RawMessage, res any, e *rpcError) ([]byte, error) {
	out := map[string]any{"jsonrpc": "2.0", "id": id}
	if e != nil {
		out["error"] = e
	} else {
		out["result"] = res
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode JSON-RPC answer: %w", err)
	}
	return b, nil
}

// createTask is a task-augmented tools/call: the question is created (or,
// for get_feedback_result, looked up) now, and the task returned at once.
func (m *MCP) createTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	var p struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
		Task      json.RawMessage `json:"task"`
		Meta      json.RawMessage `json:"_meta"`
	}
	if err := json.Unmarshal(params, &p); err != nil {
		return nil, invalidParams("params of tools/call must be an object with name, arguments and task: %v", err)
	}
	// The requested ttl is checked but not followed: a task lives as long
	// as its question (README, Tasks), or its answer could outlive it.
	var tp struct {
		TTL json.RawMessage `json:"ttl"`
	}
	if err := json.Unmarshal(p.Task, &tp); err != nil {
		return nil, invalidParams("params.task must be an object like {\"ttl\": 60000}")
	}
	if len(tp.TTL) > 0 && string(tp.TTL) != "null" {
		var n int64
		if err := json.Unmarshal(tp.TTL, &n); err != nil || n < 0 {
			return nil, invalidParams("params.task.ttl must be a non-negative integer (milliseconds)")
		}
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = p.Name
	req.Params.RawArguments = p.Arguments
	if len(p.Arguments) == 0 || string(p.Arguments) == "null" {
		req.Params.RawArguments = json.RawMessage("{}")
	}
	owner := OwnerOf(rq.claims)
	rec := &taskRecord{Issuer: owner.Issuer, Subject: owner.Subject, Tool: p.Name, Created: time.Now().UTC()}
	var (
		sess *store.Session
		link string
	)
	switch p.Name {
	case ToolInteractiveFeedback:
		if !rq.claims.HasScope(auth.ScopeCreate) || !rq.claims.HasScope(auth.ScopeRead) {
			return nil, invalidParams("this token's scope must include %s and %s to ask as a task (the task's result is the answer)", auth.ScopeCreate, auth.ScopeRead)
		}
		raw, fail := rawArgs(req)
		if fail != nil {
			return nil, invalidParams("%s", resultText(fail))
		}
		// wait is accepted and ignored: the task is the wait.
		a, fail2 := m.ask(ctx, rq, raw)
		if fail2 != nil {
			return nil, invalidParams("%s", resultText(fail2))
		}
		sess, link = a.sess, a.link
		// onTimeout keep: the question stays open past the asker's
		// timeout, the task's wait does not (as for a plain call).
		if end := waitEnd(sess); end.Before(sess.ExpiresAt) {
			rec.Until = end
		}
	case ToolGetFeedbackResult:
		_, args, s, fail := sessionCall(ctx, req, auth.ScopeRead, true)
		if fail != nil {
			return nil, invalidParams("%s", resultText(fail))
		}
		sess, link = s, m.link(ctx, s.ID)
		rec.Until = sess.ExpiresAt
		if args.Wait != nil {
			rec.Until = time.Now().Add(*args.Wait)
		}
	case "":
		return nil, invalidParams("params.name is missing: name the tool to call")
	default:
		if slices.ContainsFunc(m.Tools(), func(t mcp.Tool) bool { return t.Name == p.Name }) {
			// The spec's answer for a tool whose taskSupport is absent.
			return nil, &rpcError{Code: mcp.METHOD_NOT_FOUND, Message: fmt.Sprintf("tool %q cannot run as a task (only %s and %s can); call it without params.task", p.Name, ToolInteractiveFeedback, ToolGetFeedbackResult)}
		}
		return nil, invalidParams("tool %q not found", p.Name)
	}
	rec.ID = taskIDPrefix + rand.Text()
	rec.Question = sess.ID
	rec.Expires = sess.ExpiresAt.Add(rq.svc.core.Retention())
	if err := m.putTask(ctx, rq, rec, true); err != nil {
		rq.svc.log.Error("mcp: task not stored", zap.String("session", sess.ID), zap.Error(err))
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the task could not be stored (session store unavailable); try again"}
	}
	rq.svc.log.Debug("mcp: task created", zap.String("task", rec.ID), zap.String("session", sess.ID), zap.String("tool", p.Name))
	task := m.taskView(rec, sess, link)
	out := map[string]any{"task": task}
	// What a host shows the model while the task runs: the link to show.
	var say string
	switch {
	case p.Name == ToolGetFeedbackResult:
		say = fmt.Sprintf("Waiting for the user's answer to question %s as task %s.", sess.ID, rec.ID)
	case link != "":
		say = fmt.Sprintf("Question %s created as task %s. Show this link to the user now so they can answer:\n%s", sess.ID, rec.ID, link)
	default:
		say = fmt.Sprintf("Question %s created as task %s; the user is notified by this server and answers there.", sess.ID, rec.ID)
	}
	out["_meta"] = map[string]any{mcp.ModelImmediateResponseMetaKey: say}
	return out, nil
}

// resultText is the text of a tool error result.
func resultText(r *mcp.CallToolResult) string {
	for _, c := range r.Content {
		if t, ok := c.(mcp.TextContent); ok {
			return t.Text
		}
	}
	return "the call failed"
}

// putTask stores a task record and, when new, indexes it under its owner
// and its question.
func (m *MCP) putTask(ctx context.Context, rq *mcpRequest, rec *taskRecord, isNew bool) error {
	kv := rq.svc.core.Hub().Records()
	ttl := time.Until(rec.Expires)
	if ttl < time.Second {
		ttl = time.Second
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode task: %w", err)
	}
	if err := kv.Put(ctx, kvTask+rec.ID, b, ttl); err != nil {
		return fmt.Errorf("store task %s: %w", rec.ID, err)
	}
	if !isNew {
		return nil
	}
	if err := kv.AddMember(ctx, ownerKey(rec.owner()), rec.ID, rec.Expires); err != nil {
		return fmt.Errorf("index task %s by owner: %w", rec.ID, err)
	}
	if err := kv.AddMember(ctx, kvQTasks+rec.Question, rec.ID, rec.Expires); err != nil {
		return fmt.Errorf("index task %s by question: %w", rec.ID, err)
	}
	return nil
}

// loadTask reads a task of the caller's; another identity's task reads as
// not found, as does one that never existed.
func (m *MCP) loadTask(ctx context.Context, kv store.KV, owner store.Owner, id string) (*taskRecord, *rpcError) {
	if !validTaskID(id) {
		return nil, invalidParams("taskId %q is not a task id of this server (they look like %s…)", clip(id, 80), taskIDPrefix)
	}
	b, err := kv.Load(ctx, kvTask+id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalidParams("task %s not found (it never existed, belongs to another identity, or has expired)", id)
	}
	if err != nil {
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the task could not be read (session store unavailable); try again"}
	}
	var rec taskRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.owner() != owner {
		return nil, invalidParams("task %s not found (it never existed, belongs to another identity, or has expired)", id)
	}
	return &rec, nil
}

func validTaskID(id string) bool {
	rest, ok := strings.CutPrefix(id, taskIDPrefix)
	return ok && len(id) <= maxTaskIDLen && rest != "" &&
		!strings.ContainsFunc(rest, func(r rune) bool { return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') })
}

type taskIDParams struct {
	TaskID string `json:"taskId"`
}

func taskIDOf(params json.RawMessage) (string, *rpcError) {
	var p taskIDParams
	if err := json.Unmarshal(params, &p); err != nil || p.TaskID == "" {
		return "", invalidParams("params must be {\"taskId\": \"…\"} with the taskId the tools/call returned")
	}
	return p.TaskID, nil
}

// taskStatus derives a task's status from its question.
func taskStatus(rec *taskRecord, sess *store.Session, now time.Time) mcp.TaskStatus {
	switch {
	case rec.Cancelled:
		return mcp.TaskStatusCancelled
	case sess == nil:
		return mcp.TaskStatusFailed // the question is gone
	case sess.Status == store.StatusPending && !rec.Until.IsZero() && !now.Before(rec.Until):
		return mcp.TaskStatusCompleted // the wait ran out: the result says pending
	case sess.Status == store.StatusPending:
		// Not input_required: in 2025-11-25 that asks the *client* for input
		// through tasks/result, which would make SDK clients block there.
		return mcp.TaskStatusWorking
	case sess.Status == store.StatusCancelled && rec.Tool == ToolInteractiveFeedback:
		return mcp.TaskStatusCancelled
	default:
		return mcp.TaskStatusCompleted
	}
}

// taskView is the protocol's Task of a record.
func (m *MCP) taskView(rec *taskRecord, sess *store.Session, link string) mcp.Task {
	now := time.Now()
	st := taskStatus(rec, sess, now)
	ttl := rec.Expires.Sub(rec.Created).Milliseconds()
	poll := taskPollInterval.Milliseconds()
	t := mcp.Task{TaskId: rec.ID, Status: st, CreatedAt: rec.Created.Format(time.RFC3339Nano), LastUpdatedAt: rec.Created.Format(time.RFC3339Nano), TTL: &ttl}
	if sess != nil && sess.UpdatedAt.After(rec.Created) {
		t.LastUpdatedAt = sess.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	switch st {
	case mcp.TaskStatusWorking:
		t.PollInterval = &poll
		until := sess.ExpiresAt
		if !rec.Until.IsZero() && rec.Until.Before(until) {
			until = rec.Until
		}
		t.StatusMessage = fmt.Sprintf("Waiting for the user to answer question %s (%d seconds left).", sess.ID, secondsLeft(until))
		if link != "" {
			t.StatusMessage = fmt.Sprintf("Waiting for the user to answer at %s (%d seconds left).", link, secondsLeft(until))
		}
	case mcp.TaskStatusFailed:
		t.StatusMessage = "The question is gone from the store (past its retention)."
	case mcp.TaskStatusCancelled:
		t.StatusMessage = "Cancelled: the question was withdrawn or the wait was cancelled."
	default:
		if sess != nil {
			t.StatusMessage = "The question is " + string(sess.Status) + "; read the outcome with tasks/result."
		}
	}
	return t
}

// question reads a task's question exactly (not PeekOwned: a pending
// copy cached here may be stale when another instance took the answer).
func (m *MCP) question(ctx context.Context, rq *mcpRequest, rec *taskRecord) (*store.Session, *rpcError) {
	sess, err := rq.svc.core.Get(ctx, rec.owner(), rec.Question)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the question could not be read (session store unavailable); try again"}
	}
	return sess, nil
}

// taskOf reads the task params name (of this identity) and its question:
// the first steps of tasks/get, tasks/cancel and the extension's requests.
func (m *MCP) taskOf(ctx context.Context, rq *mcpRequest, params json.RawMessage) (string, *taskRecord, *store.Session, *rpcError) {
	id, e := taskIDOf(params)
	if e != nil {
		return "", nil, nil, e
	}
	rec, e := m.loadTask(ctx, rq.svc.core.Hub().Records(), OwnerOf(rq.claims), id)
	if e != nil {
		return "", nil, nil, e
	}
	sess, e := m.question(ctx, rq, rec)
	if e != nil {
		return "", nil, nil, e
	}
	return id, rec, sess, nil
}

func (m *MCP) getTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	_, rec, sess, e := m.taskOf(ctx, rq, params)
	if e != nil {
		return nil, e
	}
	return m.taskView(rec, sess, m.link(ctx, rec.Question)), nil
}

func (m *MCP) cancelTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	id, rec, sess, e := m.taskOf(ctx, rq, params)
	if e != nil {
		return nil, e
	}
	owner := OwnerOf(rq.claims)
	if st := taskStatus(rec, sess, time.Now()); st != mcp.TaskStatusWorking {
		e := invalidParams("task %s is already %s, so it cannot be cancelled", id, st)
		e.done = true
		return nil, e
	}
	if rec.Tool == ToolInteractiveFeedback {
		if !rq.claims.HasScope(auth.ScopeCreate) {
			return nil, invalidParams("this token's scope does not include %s, which withdrawing the question needs", auth.ScopeCreate)
		}
		cur, err := rq.svc.core.Withdraw(ctx, owner, rec.Question)
		switch {
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrGone):
			// Answered or expired in the meantime: the task completed.
			cur, _ = m.question(ctx, rq, rec)
			e := invalidParams("task %s is already %s, so it cannot be cancelled", id, taskStatus(rec, cur, time.Now()))
			e.done = true
			return nil, e
		case err != nil:
			return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the question could not be withdrawn (session store unavailable); try again"}
		}
		sess = cur
		rq.svc.log.Debug("mcp: task cancelled, question withdrawn", zap.String("task", id), zap.String("session", rec.Question))
	} else {
		rec.Cancelled = true
		if err := m.putTask(ctx, rq, rec, false); err != nil {
			return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the task could not be updated (session store unavailable); try again"}
		}
		m.notifyTask(rec, sess) // no question event carries this one
	}
	return m.taskView(rec, sess, ""), nil
}

func (m *MCP) listTasks(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	var p struct {
		Cursor string `json:"cursor"`
	}
	if len(params) > 0 && string(params) != "null" {
		if err := json.Unmarshal(params, &p); err != nil {
			return nil, invalidParams("params must be an object, optionally with a cursor from a previous tasks/list")
		}
	}
	start := 0
	if p.Cursor != "" {
		n, err := strconv.Atoi(p.Cursor)
		if err != nil || n < 0 {
			return nil, invalidParams("cursor %q is not one this server returned", clip(p.Cursor, 40))
		}
		start = n
	}
	owner := OwnerOf(rq.claims)
	kv := rq.svc.core.Hub().Records()
	ids, err := kv.Members(ctx, ownerKey(owner))
	if err != nil {
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the tasks could not be listed (session store unavailable); try again"}
	}
	slices.Sort(ids)
	tasks := []mcp.Task{}
	next := ""
	// The tasks still missing from the page are read together (rueidis
	// pipelines concurrent commands), then taken in order; a task that
	// expired between the index and its read leaves a gap the next batch
	// fills.
	for i := start; i < len(ids) && next == ""; {
		batch := ids[i:min(len(ids), i+taskListPage-len(tasks))]
		got := make([]listedTask, len(batch))
		var wg sync.WaitGroup
		for j, id := range batch {
			wg.Go(func() { got[j] = m.listedTask(ctx, rq, kv, owner, id) })
		}
		wg.Wait()
		for _, t := range got {
			i++
			if t.err != nil {
				return nil, t.err
			}
			if t.rec == nil {
				continue // expired between the two reads
			}
			tasks = append(tasks, m.taskView(t.rec, t.sess, m.link(ctx, t.rec.Question)))
		}
		if len(tasks) == taskListPage && i < len(ids) {
			next = strconv.Itoa(i)
		}
	}
	out := map[string]any{"tasks": tasks}
	if next != "" {
		out["nextCursor"] = next
	}
	return out, nil
}

// listedTask is one task of a tasks/list page as read: rec is nil for a
// task that expired between the index and its record.
type listedTask struct {
	rec  *taskRecord
	sess *store.Session
	err  *rpcError
}

func (m *MCP) listedTask(ctx context.Context, rq *mcpRequest, kv store.KV, owner store.Owner, id string) listedTask {
	rec, e := m.loadTask(ctx, kv, owner, id)
	if e != nil {
		return listedTask{}
	}
	sess, e := m.question(ctx, rq, rec)
	return listedTask{rec: rec, sess: sess, err: e}
}

// taskResult blocks until the task is done and answers with the tool's
// result. While it waits it keeps the response alive with SSE comments
// (when the client accepts a stream), so proxies do not cut it.
func (m *MCP) taskResult(ctx context.Context, w http.ResponseWriter, r *http.Request, rq *mcpRequest, msg *rpcMessage) {
	id, e := taskIDOf(msg.Params)
	if e != nil {
		writeRPC(w, msg.ID, nil, e)
		return
	}
	if !rq.claims.HasScope(auth.ScopeRead) {
		writeRPC(w, msg.ID, nil, invalidParams("this token's scope does not include %s, which reading the answer needs", auth.ScopeRead))
		return
	}
	rec, e := m.loadTask(ctx, rq.svc.core.Hub().Records(), OwnerOf(rq.claims), id)
	if e != nil {
		writeRPC(w, msg.ID, nil, e)
		return
	}
	ctx, done, ok := m.track(ctx, rq)
	if !ok {
		writeRPC(w, msg.ID, nil, &rpcError{Code: mcp.INVALID_REQUEST, Message: "this token's subject already has the most calls in flight it may have; wait for one to finish or cancel one, then call tasks/result again (or poll tasks/get)"})
		return
	}
	defer done()

	stream := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	started := false
	tick := func() bool {
		if !stream {
			return true
		}
		if !started {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		_, err := w.Write([]byte(": waiting for the person's answer\n\n"))
		if err == nil {
			err = http.NewResponseController(w).Flush()
		}
		return err == nil
	}
	res, e := m.awaitTask(ctx, rq, rec, feedback.Every{D: m.opts.KeepAlive, Fn: tick})
	b, err := rpcBytes(msg.ID, res, e)
	if err != nil {
		b, _ = rpcBytes(msg.ID, nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the result could not be encoded"})
	}
	if started {
		_, _ = fmt.Fprintf(w, "event: message\ndata: %s\n\n", b)
		_ = http.NewResponseController(w).Flush()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// awaitTask waits, through the core's Await, for the task's end and
// returns the tool result tasks/result carries.
func (m *MCP) awaitTask(ctx context.Context, rq *mcpRequest, rec *taskRecord, every feedback.Every) (any, *rpcError) {
	until := rec.Until // zero: the question's deadline
	sess, err := rq.svc.core.Get(ctx, rec.owner(), rec.Question)
	if err == nil && sess.Status == store.StatusPending && !rec.Cancelled && (until.IsZero() || time.Now().Before(until)) {
		var cur *store.Session
		cur, err = rq.svc.core.AwaitEvery(ctx, rec.Question, until, every)
		if cur != nil {
			sess = cur
		}
	}
	switch {
	case ctx.Err() != nil:
		if errors.Is(context.Cause(ctx), errShutdown) {
			return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the server is restarting; call tasks/result again to keep waiting (the task and the question live on)"}
		}
		return nil, &rpcError{Code: mcp.REQUEST_INTERRUPTED, Message: "the request was cancelled"}
	case errors.Is(err, store.ErrNotFound):
		return nil, invalidParams("the question of task %s is gone (past its retention)", rec.ID)
	case errors.Is(err, feedback.ErrStoreClosed):
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the configuration changed under this wait; call tasks/result again"}
	case err != nil:
		return nil, &rpcError{Code: mcp.INTERNAL_ERROR, Message: "the question could not be read (session store unavailable); call tasks/result again"}
	}
	if rec.Cancelled {
		res := mcp.NewToolResultText("This wait was cancelled (tasks/cancel); the question itself is still " + string(sess.Status) + ".")
		res.Meta = mcp.NewMetaFromMap(map[string]any{relatedTaskKey: map[string]any{"taskId": rec.ID}})
		return res, nil
	}
	res := answerResult(ctx, rq, sess, m.link(ctx, rec.Question), sess.Status == store.StatusPending)
	res.Meta = mcp.NewMetaFromMap(map[string]any{relatedTaskKey: map[string]any{"taskId": rec.ID}})
	return res, nil
}

// track registers a blocking task request like a tool call: Shutdown ends
// it, and it counts towards (and is held to) the owner's cap on calls in
// flight. ok is false when the cap is reached.
func (m *MCP) track(ctx context.Context, rq *mcpRequest) (context.Context, func(), bool) {
	owner := OwnerOf(rq.claims)
	ctx, cancel := context.WithCancelCause(ctx)
	c := &inflight{cancel: cancel, done: make(chan struct{})}
	if !m.admit(c, owner, callLimit(rq)) {
		cancel(nil)
		return ctx, nil, false
	}
	return ctx, func() {
		cancel(nil)
		close(c.done)
		m.leave(c, owner)
	}, true
}

// TaskEvents returns the hub subscriber that sends notifications/tasks/status
// for the tasks of a question that changed, to the MCP sessions of the
// task's owner on this instance (and no one else's). It never blocks the
// publisher: the work is queued, and dropped if the queue is full (the
// client still sees the status on its next tasks/get).
func (m *MCP) TaskEvents(kv store.KV) func(feedback.Event) {
	m.taskKV.Store(&kv)
	return func(e feedback.Event) {
		if e.Kind == feedback.EventCreated || e.Session == nil {
			return
		}
		select {
		case m.taskQueue <- e.Session:
		default:
		}
	}
}

// runTaskNotifier sends the queued status notifications until ctx ends.
func (m *MCP) runTaskNotifier(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case sess := <-m.taskQueue:
			kvp := m.taskKV.Load()
			// Tasks are their question owner's, and notifications go to
			// that owner's sessions here: with none, no store read.
			if kvp == nil || !m.hasStreamableSession(sess.Owner) {
				continue
			}
			kv := *kvp
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ids, err := kv.Members(lctx, kvQTasks+sess.ID)
			for _, id := range ids {
				if err != nil {
					break
				}
				b, lerr := kv.Load(lctx, kvTask+id)
				var rec taskRecord
				if lerr != nil || json.Unmarshal(b, &rec) != nil || rec.Question != sess.ID {
					continue
				}
				m.notifyTask(&rec, sess)
			}
			cancel()
		}
	}
}

// hasStreamableSession reports whether owner has a Streamable HTTP
// session on this instance (where task notifications can go).
func (m *MCP) hasStreamableSession(owner store.Owner) bool {
	found := false
	m.sessions.Range(func(_, v any) bool {
		s := v.(*mcpSession)
		found = !s.sse && s.owner == owner
		return !found
	})
	return found
}

// notifyTask sends the task's status to its owner's Streamable HTTP
// sessions on this instance.
func (m *MCP) notifyTask(rec *taskRecord, sess *store.Session) {
	task := m.taskView(rec, sess, "")
	owner := rec.owner()
	m.sessions.Range(func(k, v any) bool {
		s := v.(*mcpSession)
		if s.sse || s.owner != owner {
			return true
		}
		_ = m.server.SendNotificationToSpecificClient(k.(string), mcp.MethodNotificationTasksStatus, map[string]any{
			"taskId": task.TaskId, "status": task.Status, "statusMessage": task.StatusMessage,
			"createdAt": task.CreatedAt, "lastUpdatedAt": task.LastUpdatedAt, "ttl": task.TTL,
		})
		return true
	})
}

// clientSession is the mcp-go session of a Streamable HTTP request, so that
// the task layer can read the session's link cache; nil if none.
func (m *MCP) clientSession(id string) server.ClientSession {
	if id == "" {
		return nil
	}
	if s := m.session(id); s == nil {
		return nil
	}
	return taskSession{id: id}
}

// taskSession is enough of a ClientSession for the link cache lookups.
type taskSession struct{ id string }

func (t taskSession) Initialize()                                         {}
func (t taskSession) Initialized() bool                                   { return true }
func (t taskSession) NotificationChannel() chan<- mcp.JSONRPCNotification { return nil }
func (t taskSession) SessionID() string                                   { return t.id }

// bodyBytes is a request body already read (serve reads it to bound its
// size), which the task router can look at without reading it again.
type bodyBytes struct {
	*bytes.Reader
	b []byte
}

func (b bodyBytes) Close() error  { return nil }
func (b bodyBytes) Bytes() []byte { return b.b }

// routeTask sends a task message where it can be answered: Streamable HTTP
// requests of a session, here. Tasks are not offered over the legacy SSE
// transport (its answers travel on the event stream, and mcp-go would run
// its own in-memory tasks): those requests are refused with a reason. A
// 2026-07-28 request has no session and no 2025-11-25 tasks: it gets the
// tasks extension's form (mcp_tasksext.go) when it declares it, and a
// params.task on its tools/call, a field that version does not define, is
// dropped so that the call runs as a plain one (the body to use is
// returned, handled false).
func (m *MCP) routeTask(ctx context.Context, w http.ResponseWriter, r *http.Request, rq *mcpRequest, msg *rpcMessage, sse bool, sid string) ([]byte, bool) {
	switch {
	case sse:
		WriteError(w, http.StatusBadRequest, "tasks_need_streamable_http",
			"MCP tasks (tasks/*, tools/call with params.task) are served on the Streamable HTTP endpoint /mcp, not on the legacy SSE transport")
	case sid == "" && msg.Method == methodToolsCall && extTaskCall(r, msg):
		m.serveModernTask(ctx, w, r, rq, msg)
	case sid == "" && msg.Method == methodToolsCall && mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)):
		if plain, err := withoutTask(msg); err == nil {
			return plain, false
		}
		writeRPC(w, msg.ID, nil, invalidParams("params of tools/call must be an object"))
	case sid == "":
		m.serveModernTask(ctx, w, r, rq, msg)
	case msg.Method == methodTasksUpdate:
		// Only the 2026-07-28 extension has it.
		writeRPC(w, msg.ID, nil, &rpcError{Code: mcp.METHOD_NOT_FOUND, Message: "tasks/update is a method of the 2026-07-28 tasks extension; this session speaks the 2025-11-25 form"})
	default:
		if cs := m.clientSession(sid); cs != nil {
			ctx = m.server.WithContext(ctx, cs)
		}
		m.serveTask(ctx, w, r, rq, msg)
	}
	return nil, true
}

// withoutTask re-encodes a tools/call without params.task.
func withoutTask(msg *rpcMessage) ([]byte, error) {
	var params map[string]json.RawMessage
	if err := json.Unmarshal(msg.Params, &params); err != nil {
		return nil, fmt.Errorf("decode tools/call params: %w", err)
	}
	delete(params, "task")
	p, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("encode tools/call params: %w", err)
	}
	b, err := json.Marshal(map[string]any{"jsonrpc": msg.JSONRPC, "id": msg.ID, "method": msg.Method, "params": json.RawMessage(p)})
	if err != nil {
		return nil, fmt.Errorf("encode tools/call: %w", err)
	}
	return b, nil
}
