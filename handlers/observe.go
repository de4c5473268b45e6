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
}

type nopObserver struct{}

func (nopObserver) Created(*store.Session, string) {}
func (nopObserver) AuthFailed(string)              {}
func (nopObserver) StoreFailed(string)             {}
