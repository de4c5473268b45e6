package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// withForm gives s a form with every kind of detail, as the core stores it.
func withForm(s *store.Session) *store.Session {
	lo, hi := 1.0, 5.5
	s.Form = &store.Form{
		Options: []store.Option{
			{Label: "yes", Description: "Ship it now.", Recommended: true},
			{Label: "no", Description: "Wait for the fix."},
			{Label: "later"},
		},
		PreselectRecommended: true,
		Questions: []store.Question{
			{ID: "env", Message: "Where?", Kind: store.KindSingle, Options: []store.Option{{Label: "prod"}, {Label: "staging", Description: "safe"}}, Required: true, Default: json.RawMessage(`"staging"`)},
			{ID: "n", Message: "How many?", Kind: store.KindNumber, Min: &lo, Max: &hi},
		},
		Images:    []store.ImageRef{{MediaType: "image/png", Alt: "the header", Bytes: 1234, Width: 640, Height: 480}, {MediaType: "image/webp", Bytes: 26, Width: 1, Height: 1}},
		OnTimeout: &store.TimeoutPolicy{Action: store.TimeoutKeep},
		WaitUntil: s.CreatedAt.Add(time.Minute),
	}
	return s
}

// testFormRoundTrip: a form and a form's answers come back exactly as
// stored, and a plain session still has none.
func testFormRoundTrip(t *testing.T, s store.Store) {
	in := withForm(NewSession(10 * time.Minute))
	mustCreate(t, s, in, longTTL)
	SameSession(t, "Get of a session with a form", mustGet(t, s, in.ID), in)

	got, err := s.Submit(t.Context(), in.ID, store.Answer{Answers: json.RawMessage(`{"env":"prod","n":2.5}`), FreeText: "note", Via: "link"})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if got.Result == nil || string(got.Result.Answers) != `{"env":"prod","n":2.5}` || got.Result.ByTimeout {
		t.Fatalf("Submit returned %s", dump(got))
	}
	SameSession(t, "Get after a form's Submit", mustGet(t, s, in.ID), got)

	plain := NewSession(10 * time.Minute)
	mustCreate(t, s, plain, longTTL)
	if g := mustGet(t, s, plain.ID); g.Form != nil {
		t.Fatalf("a plain session came back with a form: %+v", g.Form)
	}
}

// testTimeoutChoose: past the deadline, a session whose policy is choose
// is expired with the chosen option as its result, marked as the
// timeout's (never a person's), the same on every read; nothing can
// answer it afterwards. Without the policy an expired session has no result.
func testTimeoutChoose(t *testing.T, s store.Store) {
	in := NewSession(-time.Second)
	in.Form = &store.Form{OnTimeout: &store.TimeoutPolicy{Action: store.TimeoutChoose, Option: "later"}}
	mustCreate(t, s, in, longTTL)
	want := *in
	want.Status = store.StatusExpired
	want.UpdatedAt = in.ExpiresAt
	want.Result = &store.Result{SelectedOptions: []string{"later"}, SubmittedAt: in.ExpiresAt, Via: store.ViaTimeout, ByTimeout: true}
	SameSession(t, "first Get after the deadline", mustGet(t, s, in.ID), &want)
	SameSession(t, "second Get after the deadline", mustGet(t, s, in.ID), &want)
	_, err := s.Submit(t.Context(), in.ID, store.Answer{SelectedOptions: []string{"yes"}, Nonce: "n"})
	wantErr(t, "Submit after a timeout's choice", err, store.ErrGone)
	_, err = s.Cancel(t.Context(), in.ID)
	wantErr(t, "Cancel after a timeout's choice", err, store.ErrGone)
	SameSession(t, "Get after the refused Submit", mustGet(t, s, in.ID), &want)

	// A submit that finds the deadline passed records the same outcome.
	late := NewSession(-time.Second)
	late.Form = &store.Form{OnTimeout: &store.TimeoutPolicy{Action: store.TimeoutChoose, Option: "no"}}
	mustCreate(t, s, late, longTTL)
	_, err = s.Submit(t.Context(), late.ID, store.Answer{SelectedOptions: []string{"yes"}})
	wantErr(t, "Submit past the deadline", err, store.ErrGone)
	if g := mustGet(t, s, late.ID); g.Status != store.StatusExpired || g.Result == nil || !g.Result.ByTimeout || g.Result.SelectedOptions[0] != "no" {
		t.Fatalf("after a late Submit: %s", dump(g))
	}

	plain := NewSession(-time.Second)
	mustCreate(t, s, plain, longTTL)
	if g := mustGet(t, s, plain.ID); g.Status != store.StatusExpired || g.Result != nil {
		t.Fatalf("expired without a policy: %s", dump(g))
	}
}
