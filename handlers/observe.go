package handlers

import "github.com/mcpfeedback/caddy-mcp-feedback/store"

// Observer is told what the handlers see, for metrics and logs. The root
// package implements it with Prometheus collectors; nil means nobody listens.
// Methods must not block.
type Observer interface {
	// Created: a session was stored; feedbackURL is its answer link.
	Created(s *store.Session, feedbackURL string)
	// AuthFailed: a request was refused for its credentials.
	AuthFailed(reason string)
	// StoreFailed: the store failed (not "not found" and the like).
	StoreFailed(op string)
	// WebSockets and MCPSessions: delta is +1 when one opens, -1 when it ends.
	WebSockets(delta int)
	MCPSessions(delta int)
	// ToolCall: an MCP tool call ended with outcome ok, tool_error (isError),
	// cancelled (the client left, cancelled, or the server stopped) or error
	// (a protocol error).
	ToolCall(tool, outcome string)
}

type nopObserver struct{}

func (nopObserver) Created(*store.Session, string) {}
func (nopObserver) AuthFailed(string)              {}
func (nopObserver) StoreFailed(string)             {}
func (nopObserver) WebSockets(int)                 {}
func (nopObserver) MCPSessions(int)                {}
func (nopObserver) ToolCall(string, string)        {}
