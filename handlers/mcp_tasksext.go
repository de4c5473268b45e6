package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The 2026-07-28 tasks extension (SEP-2663, io.modelcontextprotocol/tasks),
// for stateless requests that declare it in their client capabilities. The
// server, not the client, decides to create a task: a waiting call
// (interactive_feedback with wait, get_feedback_result with a wait) returns
// a flat CreateTaskResult (resultType "task") instead of holding the
// request open, and tasks/get returns the task with the tool's result
// inlined once it is done. There is no tasks/result or tasks/list in this
// form; tasks/cancel answers an empty ack. The records are the same as the
// 2025-11-25 form's (mcp_tasks.go), so both forms see the same tasks.

// TasksExtension is the extension's id.
const TasksExtension = "io.modelcontextprotocol/tasks"

const methodTasksUpdate = "tasks/update"

// modernMeta is what routing needs of a 2026-07-28 request's _meta.
type modernMeta struct {
	Meta struct {
		Caps struct {
			Extensions map[string]json.RawMessage `json:"extensions"`
		} `json:"io.modelcontextprotocol/clientCapabilities"`
	} `json:"_meta"`
}

// declaresTasks reports whether a 2026-07-28 request's client capabilities
// name the tasks extension.
func declaresTasks(params json.RawMessage) bool {
	var m modernMeta
	if json.Unmarshal(params, &m) != nil {
		return false
	}
	_, ok := m.Meta.Caps.Extensions[TasksExtension]
	return ok
}

// extTaskCall reports whether a 2026-07-28 tools/call becomes a task: the
// client declared the extension, the request is well framed (mcp-go judges
// the rest), and the call would wait.
func extTaskCall(r *http.Request, msg *rpcMessage) bool {
	if msg.Method != methodToolsCall || r.Header.Get(mcp.HeaderMethod) != methodToolsCall || !declaresTasks(msg.Params) {
		return false
	}
	var p struct {
		Name         string `json:"name"`
		RequestState string `json:"requestState"`
		Arguments    struct {
			Wait json.RawMessage `json:"wait"`
		} `json:"arguments"`
	}
	if json.Unmarshal(msg.Params, &p) != nil || r.Header.Get(mcp.HeaderName) != p.Name || p.RequestState != "" {
		return false
	}
	w := string(p.Arguments.Wait)
	switch p.Name {
	case ToolInteractiveFeedback:
		return w == "true"
	case ToolGetFeedbackResult:
		return w != "" && w != "0" && w != "null"
	}
	return false
}

// missingTasksCapability is the error for a task method from a client that
// did not declare the extension (HTTP 400, -32021).
func missingTasksCapability(w http.ResponseWriter, id json.RawMessage) {
	b, _ := rpcBytes(id, nil, &rpcError{Code: mcp.MISSING_REQUIRED_CLIENT_CAPABILITY,
		Message: "the tasks methods need the " + TasksExtension + " extension: declare it in _meta's clientCapabilities.extensions",
		Data:    map[string]any{"requiredCapabilities": map[string]any{"extensions": map[string]any{TasksExtension: map[string]any{}}}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(b)
}

// writeRPCStatus writes a JSON-RPC answer with the HTTP status 2026-07-28
// gives its error code.
func writeRPCStatus(w http.ResponseWriter, id json.RawMessage, res any, e *rpcError) {
	status := http.StatusOK
	if e != nil {
		switch e.Code {
		case mcp.METHOD_NOT_FOUND:
			status = http.StatusNotFound
		case mcp.INVALID_PARAMS, mcp.INVALID_REQUEST, mcp.MISSING_REQUIRED_CLIENT_CAPABILITY:
			status = http.StatusBadRequest
		}
	}
	b, err := rpcBytes(id, res, e)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "internal_error", "the answer could not be encoded")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serveModernTask answers a task message of a 2026-07-28 request (no
// session): the extension's form when the client declared it.
func (m *MCP) serveModernTask(ctx context.Context, w http.ResponseWriter, r *http.Request, rq *mcpRequest, msg *rpcMessage) {
	if !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) {
		WriteError(w, http.StatusBadRequest, "session_required",
			"this request needs the Mcp-Session-Id header of an open session; start one with an initialize POST")
		return
	}
	switch msg.Method {
	case methodTasksResult, methodTasksList:
		writeRPCStatus(w, msg.ID, nil, &rpcError{Code: mcp.METHOD_NOT_FOUND,
			Message: msg.Method + " is not part of the 2026-07-28 tasks extension: tasks/get returns the result of a completed task"})
		return
	}
	if !declaresTasks(msg.Params) {
		missingTasksCapability(w, msg.ID)
		return
	}
	var (
		res any
		e   *rpcError
	)
	switch msg.Method {
	case methodToolsCall:
		res, e = m.createExtTask(ctx, rq, msg.Params)
		m.countTaskCall(msg.Params, e)
	case methodTasksGet:
		res, e = m.getExtTask(ctx, rq, msg.Params)
	case methodTasksCancel:
		res, e = m.cancelExtTask(ctx, rq, msg.Params)
	case methodTasksUpdate:
		res, e = m.updateExtTask(ctx, rq, msg.Params)
	}
	writeRPCStatus(w, msg.ID, res, e)
}

// extTask is the extension's flat Task of a record.
func (m *MCP) extTask(rec *taskRecord, sess *store.Session, link string) map[string]any {
	t := m.taskView(rec, sess, link)
	out := map[string]any{"taskId": t.TaskId, "status": t.Status, "createdAt": t.CreatedAt, "lastUpdatedAt": t.LastUpdatedAt, "ttlMs": t.TTL}
	if t.StatusMessage != "" {
		out["statusMessage"] = t.StatusMessage
	}
	if t.PollInterval != nil {
		out["pollIntervalMs"] = *t.PollInterval
	}
	return out
}

func (m *MCP) createExtTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	// The same creation as the 2025-11-25 form; params.task is not needed.
	var p map[string]json.RawMessage
	if err := json.Unmarshal(params, &p); err != nil {
		return nil, invalidParams("params of tools/call must be an object")
	}
	p["task"] = json.RawMessage("{}")
	withTask, _ := json.Marshal(p)
	created, e := m.createTask(ctx, rq, withTask)
	if e != nil {
		return nil, e
	}
	task := created.(map[string]any)["task"].(mcp.Task)
	out := map[string]any{"resultType": "task", "taskId": task.TaskId, "status": task.Status, "createdAt": task.CreatedAt,
		"lastUpdatedAt": task.LastUpdatedAt, "ttlMs": task.TTL, "statusMessage": task.StatusMessage}
	if task.PollInterval != nil {
		out["pollIntervalMs"] = *task.PollInterval
	}
	if meta, ok := created.(map[string]any)["_meta"]; ok {
		out["_meta"] = meta
	}
	return out, nil
}

// getExtTask is the extension's tasks/get: the task, with the tool's result
// inlined once it is completed.
func (m *MCP) getExtTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	_, rec, sess, e := m.taskOf(ctx, rq, params)
	if e != nil {
		return nil, e
	}
	out := m.extTask(rec, sess, "")
	out["resultType"] = "complete"
	switch taskStatus(rec, sess, time.Now()) {
	case mcp.TaskStatusCompleted:
		if !rq.claims.HasScope(auth.ScopeRead) {
			return nil, invalidParams("this token's scope does not include %s, which reading the answer needs", auth.ScopeRead)
		}
		res := answerResult(ctx, rq, sess, "", sess.Status == store.StatusPending)
		res.Meta = mcp.NewMetaFromMap(map[string]any{relatedTaskKey: map[string]any{"taskId": rec.ID}})
		out["result"] = res
	case mcp.TaskStatusFailed:
		out["error"] = map[string]any{"code": mcp.INTERNAL_ERROR, "message": "the question is gone from the store (past its retention)"}
	}
	return out, nil
}

// cancelExtTask is the extension's tasks/cancel: an empty ack, also for a
// task that is already done; only an unknown task is an error.
func (m *MCP) cancelExtTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	if _, e := m.cancelTask(ctx, rq, params); e != nil && !e.done {
		return nil, e
	}
	return map[string]any{"resultType": "complete"}, nil
}

// extRoute picks out a 2026-07-28 tools/call that becomes a task.
func extRoute(r *http.Request, body []byte) (*rpcMessage, bool) {
	if !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) {
		return nil, false
	}
	var msg rpcMessage
	if json.Unmarshal(body, &msg) != nil || len(msg.ID) == 0 || !extTaskCall(r, &msg) {
		return nil, false
	}
	return &msg, true
}

// updateExtTask is tasks/update: these tasks never wait for the client's
// input (the person answers on the page), so there is nothing to update.
func (m *MCP) updateExtTask(ctx context.Context, rq *mcpRequest, params json.RawMessage) (any, *rpcError) {
	id, rec, sess, e := m.taskOf(ctx, rq, params)
	if e != nil {
		return nil, e
	}
	rq.svc.log.Debug("mcp: tasks/update for a task that takes no input", zap.String("task", id))
	return nil, invalidParams("task %s is %s and does not wait for input (the person answers on the page); there is nothing to update", id, fmt.Sprint(taskStatus(rec, sess, time.Now())))
}
