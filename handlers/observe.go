package handlers

// Observer is told what the transports see, for metrics and logs (what
// happens to questions comes from the core's event stream instead). The root
// package implements it with Prometheus collectors; nil means nobody listens.
// Methods must not block.
type Observer interface {
	// AuthFailed: a request was refused for its credentials.
	AuthFailed(reason string)
	// StoreFailed: the store failed (not "not found" and the like).
	StoreFailed(op string)
	// WebSockets and MCPSessions: delta is +1 when one opens, -1 when it ends.
	WebSockets(delta int)
	MCPSessions(delta int)
	// ToolCall: an MCP tool call ended with outcome ok, tool_error (isError),
	// cancelled (the client left, cancelled, or the server stopped) or error
	// (a protocol error), or task (a task-augmented call returned a task).
	ToolCall(tool, outcome string)
}

type nopObserver struct{}

func (nopObserver) AuthFailed(string)       {}
func (nopObserver) StoreFailed(string)      {}
func (nopObserver) WebSockets(int)          {}
func (nopObserver) MCPSessions(int)         {}
func (nopObserver) ToolCall(string, string) {}
