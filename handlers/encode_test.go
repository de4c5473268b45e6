package handlers

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The hand-written encoders of the hot responses must give what
// encoding/json gives for the same values, byte for byte.
func TestHandEncodersMatchEncodingJSON(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 11, 29, 10, 43, 37, 291_000_000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120_000_000, time.FixedZone("x", 3600)),
		{},
		time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC), // out of range: encoding/json refuses it (stored times never are)
	}
	strs := []string{"", "5f3c6a52-1f9e-4c79-8c33-4f4b0c3b3a2e", "https://fb.example/feedback/x?lang=zh&theme=dark#t=ABC",
		"<script>", `quote " and \ backslash`, "tab\there", "ünïcödé", "line\u2028sep", "bad \xff utf-8", "del\x7f"}
	want := func(v any) []byte {
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(v); err != nil {
			return nil
		}
		return buf.Bytes()
	}
	check := func(what string, got []byte, v any) {
		t.Helper()
		w := want(v)
		if w == nil {
			return // encoding/json refuses the value (a year past 9999); nothing to match
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s:\n got %s\nwant %s", what, got, w)
		}
	}
	for _, s := range strs {
		for _, tm := range times {
			for _, url := range []string{"", s} {
				cr := CreateResponse{SessionID: s, FeedbackURL: url, Status: store.Status(s), CreatedAt: tm, ExpiresAt: tm.Add(time.Hour), Timeout: 3600}
				check("create", cr.appendJSON(nil), cr)
			}
			st := feedback.State{SessionID: s, Status: store.StatusSubmitted, CreatedAt: tm, ExpiresAt: tm, UpdatedAt: tm}
			check("state", appendState(nil, &st), st)
			sr := SubmitResponse{SessionID: s, Status: store.Status(s), SubmittedAt: tm}
			check("submit", sr.appendJSON(nil), sr)
		}
	}
}
