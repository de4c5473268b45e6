package feedback

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// An answer's first step may read the question from the Redis store's
// memory (PeekByToken, PeekOwned) and so see pending where Redis already
// holds another outcome. Each such case must still get the outcome Redis
// decides: the same success for the accepted answer's nonce, 409 for any
// other answer, 410 once closed, 404 once gone, and a closed verdict rather
// than a validation error. The stale state is made deterministic by
// changing the hash behind the store's back: no change is announced, so its
// copy keeps saying pending.
func TestAnswerFromStalePeek(t *testing.T) {
	const prefix = "stale:"
	st, admin := redisWithAdmin(t, prefix)
	s := newTestService(t, st)
	ctx := t.Context()
	// behind sets fields of a question's hash without a word to the store.
	behind := func(id string, fields ...string) {
		t.Helper()
		if err := admin.Do(ctx, admin.B().Arbitrary("HSET").Keys(prefix+"s:{"+id+"}").Args(fields...).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	msAt := func(at time.Time) string { return strconv.FormatInt(at.UnixMilli(), 10) }
	now := func() string { return msAt(time.Now()) }
	answered := `{"selectedOptions":["yes"],"freeText":"","via":"link"}`

	cases := []struct {
		name   string
		change func(id string)
		req    validate.SubmitRequest
		want   error  // nil: success
		status string // on success
	}{
		{"answered, same nonce", func(id string) {
			behind(id, "status", "submitted", "result", answered, "nonce", "n1", "submitted_ms", now(), "updated_ms", now())
		}, validate.SubmitRequest{SelectedOptions: []string{"yes"}, Nonce: "n1"}, nil, "submitted"},
		{"answered, other nonce", func(id string) {
			behind(id, "status", "submitted", "result", answered, "nonce", "n1", "submitted_ms", now(), "updated_ms", now())
		}, validate.SubmitRequest{SelectedOptions: []string{"no"}, Nonce: "n2"}, store.ErrConflict, ""},
		{"answered, no nonce", func(id string) {
			behind(id, "status", "submitted", "result", answered, "nonce", "", "submitted_ms", now(), "updated_ms", now())
		}, validate.SubmitRequest{SelectedOptions: []string{"yes"}}, store.ErrConflict, ""},
		{"withdrawn", func(id string) { behind(id, "status", "cancelled", "updated_ms", now()) },
			validate.SubmitRequest{SelectedOptions: []string{"yes"}}, store.ErrGone, ""},
		{"expired", func(id string) { behind(id, "status", "expired", "updated_ms", now()) },
			validate.SubmitRequest{SelectedOptions: []string{"yes"}}, store.ErrGone, ""},
		{"past its deadline, not yet recorded", func(id string) { behind(id, "deadline_ms", msAt(time.Now().Add(-time.Second))) },
			validate.SubmitRequest{SelectedOptions: []string{"yes"}}, store.ErrGone, ""},
		{"deleted", func(id string) {
			if err := admin.Do(ctx, admin.B().Del().Key(prefix+"s:{"+id+"}").Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}, validate.SubmitRequest{SelectedOptions: []string{"yes"}}, store.ErrNotFound, ""},
		// An answer that does not fit the question learns that the question
		// closed, not what was wrong with it (as without a stale read).
		{"answered, invalid answer", func(id string) {
			behind(id, "status", "submitted", "result", answered, "nonce", "n1", "submitted_ms", now(), "updated_ms", now())
		}, validate.SubmitRequest{SelectedOptions: []string{"maybe"}}, store.ErrConflict, ""},
		{"withdrawn, invalid answer", func(id string) { behind(id, "status", "cancelled", "updated_ms", now()) },
			validate.SubmitRequest{SelectedOptions: []string{"maybe"}}, store.ErrGone, ""},
		{"pending, invalid answer", func(string) {}, validate.SubmitRequest{SelectedOptions: []string{"maybe"}}, nil, "invalid"},
		{"pending", func(string) {}, validate.SubmitRequest{SelectedOptions: []string{"yes"}}, nil, "submitted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := ask(t, s, 10*time.Minute)
			tok := token(t, a)
			tc.change(a.Session.ID)
			// The peek comes from memory: it still says pending.
			sess, err := s.PeekByToken(ctx, a.Session.ID, tok)
			if err != nil || sess.Status != store.StatusPending {
				t.Fatalf("PeekByToken: %v %+v, want the remembered pending question", err, sess)
			}
			got, err := s.Answer(ctx, sess, &tc.req, Via{How: ViaLink})
			switch {
			case tc.status == "invalid":
				var verr *validate.Error
				if !errors.As(err, &verr) {
					t.Fatalf("Answer: %v, want a validation error", err)
				}
			case tc.want != nil:
				if !errors.Is(err, tc.want) {
					t.Fatalf("Answer: %v %+v, want %v", err, got, tc.want)
				}
			case err != nil:
				t.Fatalf("Answer: %v", err)
			case string(got.Status) != tc.status || got.Result == nil || !strings.Contains(strings.Join(got.Result.SelectedOptions, ","), "yes"):
				t.Fatalf("Answer: %+v %+v, want %s with the accepted answer", got, got.Result, tc.status)
			}
		})
	}

	// A withdrawal's owner check comes from memory too; the store decides.
	a := ask(t, s, 10*time.Minute)
	behind(a.Session.ID, "status", "submitted", "result", answered, "nonce", "", "submitted_ms", now(), "updated_ms", now())
	if _, err := s.Withdraw(ctx, Owner{Subject: "alice"}, a.Session.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Withdraw of an answered question seen as pending: %v, want ErrConflict", err)
	}
	if _, err := s.Withdraw(ctx, Owner{Subject: "mallory"}, a.Session.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Withdraw by someone else: %v, want ErrNotFound", err)
	}
}
