package feedback

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// TestAddressedInbox: a question addressed to bob is in the owner's and
// bob's inboxes, not carol's; bob may answer it and is recorded as the
// one who did; each of those inboxes hears of the create and of the
// answer through its person's topic, carol's does not.
func TestAddressedInbox(t *testing.T) {
	hub := NewHub(store.NewMemory())
	t.Cleanup(func() { _ = hub.Close() })
	s := NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour, IndexByOwner: true})
	ctx := t.Context()

	alice, bob, carol := hub.WatchPerson(ctx, "alice"), hub.WatchPerson(ctx, "bob"), hub.WatchPerson(ctx, "carol")
	sess := askWith(t, s, "alice", &validate.CreateRequest{Message: "Merge?", PredefinedOptions: []string{"yes", "no"}, To: []string{"bob", "alice"}})
	storetest.WaitSignal(t, alice, "alice's inbox after the create")
	storetest.WaitSignal(t, bob, "bob's inbox after the create")
	// Announcements go out in order, one at a time: once dave's (a later
	// question) arrived, all of the first question's have been made, and
	// none may have reached carol.
	dave := hub.WatchPerson(ctx, "dave")
	askWith(t, s, "dave", &validate.CreateRequest{Message: "Later?", AllowFreeText: true})
	storetest.WaitSignal(t, dave, "dave's inbox after his own question")
	select {
	case <-carol:
		t.Fatal("carol's inbox was told of a question not addressed to her")
	default:
	}

	for person, want := range map[string]int{"alice": 1, "bob": 1, "carol": 0} {
		got, err := s.Inbox(ctx, person)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != want || want == 1 && got[0].ID != sess.ID {
			t.Errorf("%s's inbox has %d questions, want %d", person, len(got), want)
		}
	}
	if _, err := s.GetForPerson(ctx, "carol", sess.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("carol reading bob's question: %v, want not found", err)
	}
	got, err := s.GetForPerson(ctx, "bob", sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Answer(ctx, got, &validate.SubmitRequest{SelectedOptions: []string{"yes"}}, Via{How: ViaInbox, By: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Result.AnsweredBy != "bob" || res.Owner.Subject != "alice" {
		t.Fatalf("answered by %q, owned by %q", res.Result.AnsweredBy, res.Owner.Subject)
	}
	storetest.WaitSignal(t, alice, "alice's inbox after bob's answer")
	storetest.WaitSignal(t, bob, "bob's inbox after his answer")
}

// TestAddressingNeedsIndex: a Service without the inbox's index refuses
// `to` rather than store a question nobody addressed could find.
func TestAddressingNeedsIndex(t *testing.T) {
	s := newTestService(t, store.NewMemory())
	_, err := s.Ask(t.Context(), Owner{Subject: "alice"}, &validate.CreateRequest{Message: "m", AllowFreeText: true, Timeout: time.Minute, To: []string{"bob"}}, "https://fb.example", Style{})
	var verr *validate.Error
	if !errors.As(err, &verr) {
		t.Fatalf("Ask with to and no inbox: %v", err)
	}
}

// announceFails is the memory store with Announce failing, as Redis's
// does while it is unreachable (the rest of the store keeps working here,
// so that a question can still be asked).
type announceFails struct{ store.Store }

func (announceFails) Announce(context.Context, string) error { return store.ErrUnavailable }

// TestAnnounceFailureReported: an announcement the store refuses is
// reported (the module counts it as a store error) and the question is
// still asked: an inbox is only a refresh behind.
func TestAnnounceFailureReported(t *testing.T) {
	hub := NewHub(announceFails{store.NewMemory()})
	t.Cleanup(func() { _ = hub.Close() })
	failed := make(chan error, 4)
	hub.OnAnnounceFailure(func(err error) { failed <- err })
	s := NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour, IndexByOwner: true})
	askWith(t, s, "alice", &validate.CreateRequest{Message: "Still asked?", AllowFreeText: true})
	select {
	case err := <-failed:
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("reported %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed announcement was never reported")
	}
}
