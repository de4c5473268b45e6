// Package store holds feedback sessions: the model, the Store interface every
// backend implements, and the change feed that wakes waiters.
//
// A backend is the single source of truth for a session's state. Deadlines are
// data: a pending session whose deadline has passed is reported as expired by
// every reader, on every instance, without a timer in any one process.
package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"time"
)

// Status is where a session is in its life. Only pending moves; the others are final.
type Status string

// The four states of a session.
const (
	StatusPending   Status = "pending"
	StatusSubmitted Status = "submitted"
	StatusExpired   Status = "expired"
	StatusCancelled Status = "cancelled"
)

// Terminal reports whether no further change can happen.
func (s Status) Terminal() bool { return s != StatusPending }

// Owner identifies who created a session: the `iss` and `sub` of its token.
type Owner struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
}

// Result is the person's answer.
type Result struct {
	SelectedOptions []string  `json:"selectedOptions"`
	FreeText        string    `json:"freeText"`
	SubmittedAt     time.Time `json:"submittedAt"`
	// Via is how the answer arrived: link (the answer page), owner (the
	// owner's token with scope feedback:answer) or elicitation (the agent's
	// own MCP client). Empty for answers stored before it was recorded.
	Via string `json:"via,omitempty"`
	// AnsweredBy is who answered, when known (the owner's subject for an
	// owner answer); a holder of the link is anonymous.
	AnsweredBy string `json:"answeredBy,omitempty"`
	// Answers are a form's answers, {question id: value} (see Form), as a
	// compact JSON object whose values have each question's type.
	Answers json.RawMessage `json:"answers,omitempty"`
	// ByTimeout: no person gave this answer; the question's timeout policy
	// chose it when the deadline passed (Via is then "timeout").
	ByTimeout bool `json:"byTimeout,omitempty"`
	// Attachments are the files the person attached, in their order.
	Attachments []AttachmentRef `json:"attachments,omitempty"`
}

// Session is one question to a person and, once given, its answer.
type Session struct {
	ID                string          `json:"id"`
	Owner             Owner           `json:"owner"`
	Message           string          `json:"message"`
	PredefinedOptions []string        `json:"predefinedOptions"`
	MultiSelect       bool            `json:"multiSelect"`
	AllowFreeText     bool            `json:"allowFreeText"`
	Metadata          json.RawMessage `json:"metadata,omitempty"`
	// Form holds option details, several questions and the timeout
	// policy; nil for a plain question.
	Form      *Form     `json:"form,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Status    Status    `json:"status"`
	Result    *Result   `json:"result,omitempty"`
	// TokenHash is the SHA-256 of the capability token in the answer link.
	// The token itself is never stored.
	TokenHash []byte `json:"tokenHash"`
	// Nonce is the submission nonce of the accepted answer: a retry that
	// carries the same nonce gets the same success instead of a conflict.
	Nonce string `json:"nonce,omitempty"`
	// To are the people (subject ids) the question is addressed to besides
	// its owner: they see it in their inbox and may answer it. Empty for
	// most questions, and for every one stored before addressing existed.
	To []string `json:"to,omitempty"`
}

// People are the subjects whose inbox shows the question: its owner, then
// the people it is addressed to (To) who are not the owner.
func (s *Session) People() []string {
	out := make([]string, 0, 1+len(s.To))
	if s.Owner.Subject != "" {
		out = append(out, s.Owner.Subject)
	}
	for _, p := range s.To {
		if p != s.Owner.Subject {
			out = append(out, p)
		}
	}
	return out
}

// CheckToken reports, in constant time, whether token is this session's capability token.
func (s *Session) CheckToken(token string) bool {
	if token == "" || len(s.TokenHash) != sha256.Size {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], s.TokenHash) == 1
}

// HashToken returns the value stored in Session.TokenHash for a capability token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Answer is what a submit carries.
type Answer struct {
	SelectedOptions []string
	FreeText        string
	// Answers is a form's answers, already checked (Result.Answers).
	Answers json.RawMessage
	// Attachments are the person's uploads the answer names, already
	// checked to exist.
	Attachments []AttachmentRef
	// Nonce, when not empty, makes the submit idempotent: repeating it after
	// success returns the stored session instead of ErrConflict.
	Nonce string
	// Via and By are stored as Result.Via and Result.AnsweredBy.
	Via, By string
}

// Errors every backend returns, so that callers map them to one set of
// status codes (404, 409, 410, 503).
var (
	// ErrNotFound: no such session (never created, or past its retention).
	ErrNotFound = errors.New("session not found")
	// ErrConflict: the session already has another outcome (answered, or a
	// cancel of an answered session).
	ErrConflict = errors.New("session already answered")
	// ErrGone: the session expired or was cancelled before this operation.
	ErrGone = errors.New("session is no longer open")
	// ErrExists: Create was given an id that is already taken.
	ErrExists = errors.New("session id already exists")
	// ErrUnavailable wraps backend failures (Redis down, timeouts).
	ErrUnavailable = errors.New("session store unavailable")
)

// Store keeps sessions. Implementations are safe for concurrent use and
// shared by every handler instance that uses the same configuration.
//
// Every ability is part of the contract, so that a store cannot silently
// lack one: quotas (Admit), the records kept beside sessions (KV), the change feed that wakes waiters (Watch, Announce) and
// the change hook that events, metrics and webhooks hang off (OnChange).
// storetest.Run checks all of them.
type Store interface {
	Limiter
	KV
	// Create stores a new pending session. ttl is how long the backend keeps
	// it at all (timeout + retention); afterwards Get returns ErrNotFound.
	Create(ctx context.Context, s *Session, ttl time.Duration) error
	// Get returns the session, with Status expired once a pending session's
	// deadline has passed by the store's clock.
	Get(ctx context.Context, id string) (*Session, error)
	// Submit moves pending → submitted exactly once and before the deadline.
	// The returned session is the stored one (on an idempotent retry too).
	Submit(ctx context.Context, id string, a Answer) (*Session, error)
	// Cancel moves pending → cancelled. Cancelling a cancelled session
	// succeeds again; an answered one gives ErrConflict, an expired one ErrGone.
	Cancel(ctx context.Context, id string) (*Session, error)
	// Watch returns a channel that receives a value whenever session id may
	// have changed (on this instance or, for shared backends, any other).
	// Signals coalesce: a receiver must re-read the session with Get. The
	// channel is closed when ctx ends; a backend may also signal after it
	// reconnects, because changes in the gap were not seen.
	Watch(ctx context.Context, id string) <-chan struct{}
	// Announce signals the watchers of topic on every instance sharing the
	// store, as a change of a question signals the watchers of its id. It
	// carries no data: topics such as "person:<hash>" wake an inbox that
	// then re-reads what it shows. Like every signal it is a hint that may
	// be lost while an instance is disconnected (it then signals all its
	// watchers when it is back). topic follows the KV key rules.
	Announce(ctx context.Context, topic string) error
	// OnChange sets the function told about every state change this
	// instance makes (see ChangeFunc). Set once, before use.
	OnChange(fn ChangeFunc)
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	// Close releases connections and background work.
	Close() error
}
