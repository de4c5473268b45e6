// Package feedback is a question's whole life, with plain Go types and no
// HTTP: ask, read (as its owner or with its capability token), answer
// exactly once, withdraw, await, and one stream of events. The transports
// (REST, the answer page, the WebSocket, MCP) are thin layers over it and
// reach the store only through it.
//
// Two types split the work by lifetime:
//   - Hub is one per open store, shared by every configuration that uses
//     that store across reloads: the store, the event stream and the
//     expirer.
//   - Service is one configuration's rules over a Hub: limits, quotas,
//     retention, how long to wait out clock skew.
package feedback

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Config is one configuration's rules. Zero values take the defaults of
// the module's one table of defaults (the root package fills every field).
type Config struct {
	Limits validate.Limits
	// Retention is how long a finished question stays readable after its
	// deadline.
	Retention time.Duration
	// Quota bounds each owner's pending questions and creates per minute.
	Quota store.Quota
	// Attach bounds the files a person attaches to an answer.
	Attach AttachRules
	// Now is the clock for new questions; nil means time.Now.
	Now func() time.Time
	// IndexByOwner keeps, in the store, the set of each person's
	// questions (owned or addressed to them, until their retention ends),
	// which Inbox reads, and announces each question's creation and
	// changes to those people's inboxes on every instance (PersonTopic).
	// It costs a store write per person and an announcement per change,
	// so it is on only with the inbox.
	IndexByOwner bool
}

// Service is one configuration's view of a Hub. Safe for concurrent use.
type Service struct {
	hub *Hub
	cfg Config
}

// NewService builds the Service of one configuration.
func NewService(hub *Hub, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IndexByOwner {
		hub.announcePeople()
	}
	return &Service{hub: hub, cfg: cfg}
}

// Limits are the configured bounds of a question.
func (s *Service) Limits() validate.Limits { return s.cfg.Limits }

// Retention is how long a finished question stays readable after its
// deadline (records that live beside a question, such as MCP tasks, last
// as long).
func (s *Service) Retention() time.Duration { return s.cfg.Retention }

// Hub is the shared part this Service runs on.
func (s *Service) Hub() *Hub { return s.hub }

// Owner is who asked: the `iss` and `sub` of the agent's token.
type Owner = store.Owner

// Session is a question and, once given, its answer.
type Session = store.Session

// Style is how the answer link opens the page: its language and theme.
// Either may be empty (the person's browser decides).
type Style struct {
	Lang  string // "en" or "zh"
	Theme string // "light" or "dark"
}

// CheckStyle validates a Style from an asker.
func CheckStyle(st Style) error {
	switch st.Lang {
	case "", "en", "zh":
	default:
		return fmt.Errorf("lang must be en or zh, not %q", st.Lang)
	}
	switch st.Theme {
	case "", "light", "dark":
	default:
		return fmt.Errorf("theme must be light or dark, not %q", st.Theme)
	}
	return nil
}

// Asked is a new question as its asker sees it: the only time the
// capability token exists outside the person's browser.
type Asked struct {
	Session *Session
	// Link is the answer link, `<base>/feedback/<id>[?lang=…&theme=…]#t=<token>`.
	Link string
}

// Ask stores a validated question for owner and returns its answer link
// under base (the site's public URL, without a trailing slash). Every
// transport asks through here; the created event follows.
func (s *Service) Ask(ctx context.Context, owner Owner, req *validate.CreateRequest, base string, st Style) (*Asked, error) {
	if err := CheckStyle(st); err != nil {
		return nil, err
	}
	if len(req.To) > 0 && !s.cfg.IndexByOwner {
		// Addressed people find a question only in their inbox.
		return nil, &validate.Error{Code: "invalid_request", Message: "to needs the inbox (inbox and allow_addressing in the mcp_feedback block)"}
	}
	// rand.Text is 26 base32 characters: 130 bits, URL-safe, never stored.
	token := rand.Text()
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	sess := &Session{
		ID:                uuid.NewString(),
		Owner:             owner,
		Message:           req.Message,
		PredefinedOptions: req.PredefinedOptions,
		MultiSelect:       req.MultiSelect,
		AllowFreeText:     req.AllowFreeText,
		Metadata:          req.Metadata,
		Form:              req.Form.Clone(),
		CreatedAt:         now,
		ExpiresAt:         now.Add(req.Timeout),
		UpdatedAt:         now,
		Status:            store.StatusPending,
		TokenHash:         store.HashToken(token),
		To:                slices.Clone(req.To),
	}
	if sess.PredefinedOptions == nil {
		sess.PredefinedOptions = []string{}
	}
	ttl := req.Timeout
	if f := sess.Form; f != nil && f.OnTimeout != nil && f.OnTimeout.Action == store.TimeoutKeep {
		// keep: the asker's timeout ends the agent's wait; the question
		// stays open as long as this configuration allows any question.
		f.WaitUntil = sess.ExpiresAt
		ttl = max(s.cfg.Limits.MaxTimeout, req.Timeout)
		sess.ExpiresAt = now.Add(ttl)
	}
	if s.cfg.Quota != (store.Quota{}) {
		if err := s.hub.store.Admit(ctx, owner, sess.ID, sess.ExpiresAt, s.cfg.Quota); err != nil {
			return nil, fmt.Errorf("asking: %w", err)
		}
	}
	// Images go first, each in its own record with the question's TTL, so
	// that a question never names an image that is not there; a create
	// that fails after them leaves them to their TTL.
	for i, im := range req.Images {
		key := func(c int) string { return store.ImageKey(sess.ID, i, c) }
		if err := s.putChunks(ctx, key, im.Data, ttl+s.cfg.Retention); err != nil {
			return nil, fmt.Errorf("asking: image %d: %w", i, err)
		}
	}
	if s.cfg.IndexByOwner {
		// Before the question exists: if this fails the agent gets an
		// error and no question is left out of an inbox. An id whose
		// create then fails is skipped by Inbox.
		for _, p := range sess.People() {
			if err := s.hub.store.AddMember(ctx, personIndexKey(p), sess.ID, sess.ExpiresAt.Add(s.cfg.Retention)); err != nil {
				return nil, fmt.Errorf("asking: indexing for the inbox: %w", err)
			}
		}
	}
	if err := s.hub.store.Create(ctx, sess, ttl+s.cfg.Retention); err != nil {
		return nil, fmt.Errorf("asking: %w", err)
	}
	link := Link(base, sess.ID, token, st)
	s.hub.created(sess, link)
	return &Asked{Session: sess, Link: link}, nil
}

// Link is the answer link. The token sits in the fragment, which browsers
// never send, so it stays out of every server log and Referer; language
// and theme go in the query, before the fragment.
func Link(base, id, token string, st Style) string {
	q := url.Values{}
	if st.Lang != "" {
		q.Set("lang", st.Lang)
	}
	if st.Theme != "" {
		q.Set("theme", st.Theme)
	}
	link := strings.TrimRight(base, "/") + "/feedback/" + id
	if len(q) > 0 {
		link += "?" + q.Encode()
	}
	return link + "#t=" + token
}

// Get returns the question if owner asked it; anything else, a malformed
// id included, is store.ErrNotFound, so existence is never revealed.
func (s *Service) Get(ctx context.Context, owner Owner, id string) (*Session, error) {
	return owned(ctx, owner, id, s.get)
}

// MaxTokenLength bounds a capability token before it is hashed: real
// tokens are 26 characters.
const MaxTokenLength = 256

// GetByToken returns the question if token is its capability token (one
// constant-time check). Unknown id, wrong token and no token are all
// store.ErrNotFound.
func (s *Service) GetByToken(ctx context.Context, id, token string) (*Session, error) {
	return byToken(ctx, id, token, s.get)
}

// PeekOwned is Get for the first step of Answer (an owner's answer): who
// may answer and what the answer must fit are exact, but a pending state
// may be out of date, which Answer allows for. It saves a round trip to
// the store when this instance created or read the question before. The
// session may share memory with the store's copy: read it, never change it.
func (s *Service) PeekOwned(ctx context.Context, owner Owner, id string) (*Session, error) {
	return owned(ctx, owner, id, s.peek)
}

// PeekByToken is GetByToken for the first step of Answer, as PeekOwned.
func (s *Service) PeekByToken(ctx context.Context, id, token string) (*Session, error) {
	return byToken(ctx, id, token, s.peek)
}

// owned reads id with read and lets only its owner see it.
func owned(ctx context.Context, owner Owner, id string, read func(context.Context, string) (*Session, error)) (*Session, error) {
	sess, err := read(ctx, id)
	if err != nil {
		return nil, err
	}
	if sess.Owner != owner {
		return nil, store.ErrNotFound
	}
	return sess, nil
}

// byToken reads id with read and lets only a holder of its token see it.
func byToken(ctx context.Context, id, token string, read func(context.Context, string) (*Session, error)) (*Session, error) {
	if token == "" || len(token) > MaxTokenLength {
		return nil, store.ErrNotFound
	}
	sess, err := read(ctx, id)
	if err != nil {
		return nil, err
	}
	if !sess.CheckToken(token) {
		return nil, store.ErrNotFound
	}
	return sess, nil
}

func (s *Service) get(ctx context.Context, id string) (*Session, error) {
	if !ValidID(id) {
		return nil, store.ErrNotFound
	}
	return s.hub.read(ctx, id)
}

func (s *Service) peek(ctx context.Context, id string) (*Session, error) {
	if !ValidID(id) {
		return nil, store.ErrNotFound
	}
	return s.hub.peek(ctx, id)
}

// How an answer arrived; recorded in the result and the answered event.
const (
	ViaLink        = "link"        // the answer page, with the capability token
	ViaOwner       = "owner"       // the REST submit with the owner's token (scope feedback:answer)
	ViaElicitation = "elicitation" // the agent's MCP client asked the person in its own form
	ViaApp         = "app"         // the MCP Apps view inside the agent's conversation, with the capability token
)

// Via is how and, when known, by whom an answer arrived.
type Via struct {
	How string
	By  string
}

// Answer checks an answer against the question it answers and stores it
// exactly once (idempotent per nonce). sess must come from Get, GetByToken
// or their Peek forms: the caller has proven who is answering.
//
// sess's state may be behind the store's (a read from this instance's
// cache). Only pending can be out of date (the other states are final),
// and a stale pending is harmless: the store's submit decides from its own
// state (the accepted answer again for the same nonce, else conflict, or
// gone). The one place a stale pending would show is an answer that fails
// validation: it is checked against the store's state before it is
// reported, so that a late answer still learns that the question closed.
func (s *Service) Answer(ctx context.Context, sess *Session, req *validate.SubmitRequest, via Via) (*Session, error) {
	// A retry of the accepted answer gets the same success; any other answer
	// to a closed question gets the store's verdict, before validation, so a
	// late answer learns the question is closed rather than what was wrong
	// with it.
	if sess.Status != store.StatusPending {
		return closedVerdict(sess, req)
	}
	var (
		answers json.RawMessage
		verr    *validate.Error
	)
	if sess.Form != nil && sess.Form.Questions != nil {
		answers, verr = validate.CheckForm(req, sess.Form.Questions, sess.AllowFreeText)
	} else {
		verr = validate.CheckAnswer(req, sess.PredefinedOptions, sess.MultiSelect, sess.AllowFreeText)
	}
	if verr != nil {
		cur, err := s.hub.store.Get(ctx, sess.ID)
		switch {
		case err == nil && cur.Status != store.StatusPending:
			return closedVerdict(cur, req)
		case errors.Is(err, store.ErrNotFound):
			return nil, err
		}
		return nil, verr
	}
	atts, err := s.attachments(ctx, sess, req.Attachments)
	if err != nil {
		return nil, err
	}
	return s.hub.store.Submit(ctx, sess.ID, store.Answer{
		SelectedOptions: req.SelectedOptions, FreeText: req.FreeText, Nonce: req.Nonce,
		Answers: answers, Via: via.How, By: via.By, Attachments: atts,
	})
}

// closedVerdict is Answer's outcome for a question that is no longer
// pending.
func closedVerdict(sess *Session, req *validate.SubmitRequest) (*Session, error) {
	switch {
	case sess.Status == store.StatusSubmitted && req.Nonce != "" && req.Nonce == sess.Nonce:
		return sess, nil
	case sess.Status == store.StatusSubmitted:
		return nil, store.ErrConflict
	default:
		return nil, store.ErrGone
	}
}

// Withdraw cancels owner's question. Withdrawing again succeeds again; an
// answered question gives store.ErrConflict, an expired one store.ErrGone,
// anyone else's store.ErrNotFound. The owner check needs only what never
// changes, so it may come from this instance's cache; the store's cancel
// decides the outcome.
func (s *Service) Withdraw(ctx context.Context, owner Owner, id string) (*Session, error) {
	if _, err := s.PeekOwned(ctx, owner, id); err != nil {
		return nil, err
	}
	return s.hub.store.Cancel(ctx, id)
}

// Image returns image n of sess (which the caller has read with its
// owner's identity or its capability token) and its media type.
// store.ErrNotFound when it has no such image or the image is gone.
func (s *Service) Image(ctx context.Context, sess *Session, n int) ([]byte, string, error) {
	if sess.Form == nil || n < 0 || n >= len(sess.Form.Images) {
		return nil, "", store.ErrNotFound
	}
	ref := sess.Form.Images[n]
	data, err := s.loadChunks(ctx, func(c int) string { return store.ImageKey(sess.ID, n, c) }, ref.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("image %d of %s: %w", n, sess.ID, err)
	}
	return data, ref.MediaType, nil
}

// Ping checks that the store answers.
func (s *Service) Ping(ctx context.Context) error { return s.hub.store.Ping(ctx) }

// State is a question's state without its content: the one shape REST
// status/cancel and the MCP status/cancel tools return.
type State struct {
	SessionID string       `json:"sessionId"`
	Status    store.Status `json:"status"`
	CreatedAt time.Time    `json:"createdAt"`
	ExpiresAt time.Time    `json:"expiresAt"`
	UpdatedAt time.Time    `json:"updatedAt"`
}

// StateOf is the State of a session.
func StateOf(s *Session) State {
	return State{SessionID: s.ID, Status: s.Status, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, UpdatedAt: s.UpdatedAt}
}

// ValidID reports whether id is a canonical lower-case UUID, the only form
// this module issues. Anything else never reaches the store.
func ValidID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// IsExpected reports whether err is an outcome a caller answers for
// (not found, conflict, gone, quota) rather than a failure of the store.
func IsExpected(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) ||
		errors.Is(err, store.ErrGone) || errors.Is(err, store.ErrQuota)
}

// Exists reports whether question id exists (nil) or not
// (store.ErrNotFound), without showing anything of it: what a WebSocket
// checks before it holds a place for a browser that has yet to prove it
// holds the link.
func (s *Service) Exists(ctx context.Context, id string) error {
	_, err := s.get(ctx, id)
	return err
}
