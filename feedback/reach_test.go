package feedback

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

func askWith(t *testing.T, s *Service, sub string, req *validate.CreateRequest) *Session {
	t.Helper()
	if req.Timeout == 0 {
		req.Timeout = time.Minute
	}
	a, err := s.Ask(t.Context(), Owner{Subject: sub}, req, "https://fb.example", Style{})
	if err != nil {
		t.Fatal(err)
	}
	return a.Session
}

func TestAnswerTokenExactlyOnce(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	ctx := t.Context()
	sess := askWith(t, s, "alice", &validate.CreateRequest{Message: "Deploy?", PredefinedOptions: []string{"yes", "no"}})
	other := askWith(t, s, "alice", &validate.CreateRequest{Message: "Other?", PredefinedOptions: []string{"yes", "no"}})
	push, err := s.IssueAnswerToken(ctx, sess, ViaPush, "alice")
	if err != nil {
		t.Fatal(err)
	}
	ntfy, err := s.IssueAnswerToken(ctx, sess, ViaNtfy, "")
	if err != nil {
		t.Fatal(err)
	}

	// Refusals that leave the question open.
	for name, tc := range map[string]struct{ id, token, option string }{
		"no token":           {sess.ID, "", "yes"},
		"unknown token":      {sess.ID, "AAAAAAAAAAAAAAAAAAAAAAAAAA", "yes"},
		"other question":     {other.ID, push, "yes"},
		"malformed id":       {"not-an-id", push, "yes"},
		"huge token":         {sess.ID, string(make([]byte, 4096)), "yes"},
		"option not offered": {sess.ID, push, "maybe"},
		"empty option":       {sess.ID, push, ""},
	} {
		_, err := s.AnswerWithToken(ctx, tc.id, tc.token, tc.option)
		var verr *validate.Error
		if err == nil || !(errors.Is(err, store.ErrNotFound) || errors.As(err, &verr)) {
			t.Errorf("%s: got %v, want not found or a validation error", name, err)
		}
	}
	if got, _ := s.Get(ctx, sess.Owner, sess.ID); got.Status != store.StatusPending {
		t.Fatalf("refused taps changed the question: %s", got.Status)
	}

	// Two devices tap at once: exactly one answer is stored.
	var wg sync.WaitGroup
	results := make([]error, 2)
	for i, tok := range []string{push, ntfy} {
		wg.Go(func() {
			_, results[i] = s.AnswerWithToken(ctx, sess.ID, tok, []string{"yes", "no"}[i])
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("the losing tap got %v, want conflict", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d taps succeeded, want exactly 1 (%v)", ok, results)
	}
	got, err := s.Get(ctx, sess.Owner, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusSubmitted || len(got.Result.SelectedOptions) != 1 || got.Result.FreeText != "" {
		t.Fatalf("stored %+v", got.Result)
	}
	winner := push
	if got.Result.Via == ViaNtfy {
		winner = ntfy
	} else if got.Result.Via != ViaPush || got.Result.AnsweredBy != "alice" {
		t.Fatalf("via %q by %q, want push by alice", got.Result.Via, got.Result.AnsweredBy)
	}
	// The winning tap again (a lost response) gets the same success.
	again, err := s.AnswerWithToken(ctx, sess.ID, winner, got.Result.SelectedOptions[0])
	if err != nil || again.Result.SubmittedAt != got.Result.SubmittedAt {
		t.Fatalf("retry of the accepted tap: %v", err)
	}
}

func TestAnswerTokenOnlyForOneOption(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	for name, req := range map[string]*validate.CreateRequest{
		"free text only": {Message: "Why?", AllowFreeText: true},
		"multi-select":   {Message: "Which?", PredefinedOptions: []string{"a", "b"}, MultiSelect: true},
	} {
		sess := askWith(t, s, "alice", req)
		if _, err := s.IssueAnswerToken(t.Context(), sess, ViaPush, "alice"); !errors.Is(err, ErrNotQuick) {
			t.Errorf("%s: got %v, want ErrNotQuick", name, err)
		}
	}
}

func TestInboxNewestFirstOwnOnly(t *testing.T) {
	st := store.NewMemory()
	hub := NewHub(st)
	t.Cleanup(func() { _ = hub.Close() })
	now := time.Now()
	clock := func() time.Time { return now }
	s := NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour, IndexByOwner: true, Now: func() time.Time { return clock() }})
	var mine []string
	for i := range 3 {
		now = now.Add(time.Second * time.Duration(i+1))
		mine = append(mine, askWith(t, s, "alice", &validate.CreateRequest{Message: "q", AllowFreeText: true}).ID)
	}
	askWith(t, s, "bob", &validate.CreateRequest{Message: "not alice's", AllowFreeText: true})
	got, err := s.Inbox(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != mine[2] || got[2].ID != mine[0] {
		ids := []string{}
		for _, g := range got {
			ids = append(ids, g.ID)
		}
		t.Fatalf("inbox %v, want %v newest first", ids, mine)
	}
	if _, err := s.GetForPerson(t.Context(), "bob", mine[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob read alice's question: %v", err)
	}
}
