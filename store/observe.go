package store

import "sync/atomic"

// ChangeFunc is told about every state change this instance makes:
// pending → submitted, cancelled or expired. Each change happens exactly
// once across all instances sharing a store, so counting these calls on
// every instance and adding them up counts each session once. It must not
// block.
type ChangeFunc func(s *Session)

// changeHook holds a store's ChangeFunc; set before use, read on every change.
type changeHook struct{ fn atomic.Pointer[ChangeFunc] }

// OnChange sets the function told about this instance's state changes.
func (h *changeHook) OnChange(fn ChangeFunc) { h.fn.Store(&fn) }

func (h *changeHook) changed(s *Session) {
	if p := h.fn.Load(); p != nil && *p != nil && s != nil {
		(*p)(cloneSession(s))
	}
}
