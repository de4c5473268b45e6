package feedback

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// How a one-tap answer arrived (Via.How): from a Web Push notification's
// action button, or from an ntfy message's action button.
const (
	ViaPush = "push"
	ViaNtfy = "ntfy"
	// ViaInbox: answered in the signed-in person's inbox.
	ViaInbox = "inbox"
)

// ErrNotQuick is returned by IssueAnswerToken for a question that cannot be
// answered with one tap: it has no options, or takes several at once.
var ErrNotQuick = errors.New("feedback: the question cannot be answered with one option")

// answerTokenKey is where an answer token's record lives. Only the token's
// hash is a key, so a store dump holds no usable token.
func answerTokenKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return "answer-token:" + hex.EncodeToString(h[:])
}

type answerTokenRecord struct {
	ID  string `json:"id"`
	Via string `json:"via"`
	By  string `json:"by,omitempty"`
}

// Quick reports whether sess can be answered by picking one option: a
// single-choice question with options.
func Quick(sess *Session) bool {
	return !sess.MultiSelect && len(sess.PredefinedOptions) > 0
}

// IssueAnswerToken mints a per-question answer token for a notification
// (via is ViaPush or ViaNtfy; by is who the notification went to, recorded
// as who answered). Unlike the capability token it cannot read the
// question, write free text or pick several options: it can pick exactly
// one of the offered options, once (AnswerWithToken). It lives until the
// question's deadline, in the store, so any instance can redeem it.
func (s *Service) IssueAnswerToken(ctx context.Context, sess *Session, via, by string) (string, error) {
	if !Quick(sess) {
		return "", ErrNotQuick
	}
	ttl := time.Until(sess.ExpiresAt)
	if ttl < time.Second {
		return "", store.ErrGone
	}
	token := rand.Text()
	rec, err := json.Marshal(answerTokenRecord{ID: sess.ID, Via: via, By: by})
	if err != nil {
		return "", fmt.Errorf("answer token: %w", err)
	}
	if err := s.hub.store.Put(ctx, answerTokenKey(token), rec, ttl); err != nil {
		return "", fmt.Errorf("storing answer token: %w", err)
	}
	return token, nil
}

// AnswerWithToken answers question id with option, proven by an answer
// token from IssueAnswerToken. An unknown token, a token of another
// question and a malformed id are all store.ErrNotFound. An option that is
// not offered is a *validate.Error. The answer goes through Answer, so it
// is stored exactly once: the same token and option again get the same
// success (the token's hash is the nonce), anything else after an answer
// gets store.ErrConflict.
func (s *Service) AnswerWithToken(ctx context.Context, id, token, option string) (*Session, error) {
	if token == "" || len(token) > MaxTokenLength || !ValidID(id) {
		return nil, store.ErrNotFound
	}
	raw, err := s.hub.store.Load(ctx, answerTokenKey(token))
	if err != nil {
		return nil, fmt.Errorf("answer token: %w", err)
	}
	var rec answerTokenRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.ID != id {
		return nil, store.ErrNotFound
	}
	sess, err := s.peek(ctx, id)
	if err != nil {
		return nil, err
	}
	if !Quick(sess) {
		return nil, store.ErrNotFound
	}
	if sess.Status == store.StatusPending && !slices.Contains(sess.PredefinedOptions, option) {
		return nil, &validate.Error{Code: "invalid_request", Message: "option must be one of the question's offered options"}
	}
	// The nonce makes a retry of the same tap (a lost response) succeed
	// again, and a different option through the same token a conflict.
	sum := sha256.Sum256([]byte("nonce\x00" + token + "\x00" + option))
	nonce := "tap-" + hex.EncodeToString(sum[:16])
	return s.Answer(ctx, sess, &validate.SubmitRequest{SelectedOptions: []string{option}, Nonce: nonce}, Via{How: rec.Via, By: rec.By})
}

// personIndexKey is the set of question ids a person owns or is
// addressed by. The subject is hashed: a key of any length and bytes.
func personIndexKey(subject string) string {
	h := sha256.Sum256([]byte(subject))
	return "owner-questions:" + hex.EncodeToString(h[:])
}

// PersonTopic is the store topic (store.Store.Announce/Watch) on which a
// person's inbox hears that one of their questions was created or
// changed, on any instance. Hashed, so that no subject appears in a
// channel name.
func PersonTopic(subject string) string {
	h := sha256.Sum256([]byte("person\x00" + subject))
	return "person:" + hex.EncodeToString(h[:16])
}

// MaxInbox is how many questions Inbox returns at most (the store's cap on
// a set).
const MaxInbox = store.MaxKVMembers

// For reports whether the question is subject's: owned by them or
// addressed to them.
func For(sess *Session, subject string) bool {
	return subject != "" && (sess.Owner.Subject == subject || slices.Contains(sess.To, subject))
}

// inboxReaders bounds the reads of one inbox listing in flight at once.
const inboxReaders = 32

// Inbox returns subject's questions (owned or addressed to them), open
// and recently finished (still retained), newest first. It needs
// Config.IndexByOwner: only questions asked while it was on are found.
func (s *Service) Inbox(ctx context.Context, subject string) ([]*Session, error) {
	ids, err := s.hub.store.Members(ctx, personIndexKey(subject))
	if err != nil {
		return nil, fmt.Errorf("reading inbox: %w", err)
	}
	// The reads go out together (rueidis pipelines concurrent commands), so
	// an inbox of n questions takes a few round trips, not n.
	read := make([]*Session, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(inboxReaders)
	for i, id := range ids {
		if !ValidID(id) {
			continue
		}
		g.Go(func() error {
			sess, err := s.hub.read(gctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return nil // gone past its retention, or never created
			case err != nil:
				return err
			}
			read[i] = sess
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("reading inbox: %w", err)
	}
	out := make([]*Session, 0, len(ids))
	for _, sess := range read {
		if sess != nil && For(sess, subject) {
			out = append(out, sess)
		}
	}
	slices.SortFunc(out, func(a, b *Session) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// GetForPerson returns question id if it is subject's (owned by or
// addressed to the signed-in person of the inbox); anything else is
// store.ErrNotFound, so that nobody learns of others' questions.
func (s *Service) GetForPerson(ctx context.Context, subject, id string) (*Session, error) {
	sess, err := s.peek(ctx, id)
	if err != nil {
		return nil, err
	}
	if !For(sess, subject) {
		return nil, store.ErrNotFound
	}
	return sess, nil
}

// WatchPerson signals whenever one of subject's questions may have been
// created or changed, on any instance sharing the store (and when the
// store reconnects), until ctx ends. The receiver re-reads its Inbox.
func (h *Hub) WatchPerson(ctx context.Context, subject string) <-chan struct{} {
	return h.store.Watch(ctx, PersonTopic(subject))
}
