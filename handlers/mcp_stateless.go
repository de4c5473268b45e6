package handlers

import (
	"context"
	"net/http"

	"github.com/mark3labs/mcp-go/mcp"
)

// serveModernTask answers a task message that came without a session id.
func (m *MCP) serveModernTask(ctx context.Context, w http.ResponseWriter, r *http.Request, rq *mcpRequest, msg *rpcMessage) {
	if !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) {
		WriteError(w, http.StatusBadRequest, "session_required",
			"this request needs the Mcp-Session-Id header of an open session; start one with an initialize POST")
		return
	}
	w.WriteHeader(http.StatusNotImplemented)
}

// stateless is the multi round-trip (2026-07-28) retry of interactive_feedback.
func (m *MCP) stateless(ctx context.Context, rq *mcpRequest, req mcp.CallToolRequest) (*mcp.CallToolResult, bool) {
	return nil, false
}
