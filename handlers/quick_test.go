package handlers

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestQuickHostileInput: whatever reaches the one-tap endpoint, the answer
// is a 4xx that says what was wrong, and only a real token with an offered
// option answers, exactly once.
func TestQuickHostileInput(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	ctx := t.Context()
	owner := store.Owner{Subject: "alice"}
	id, capToken := create(t, s.svc, mint(t, "alice"), `{"message":"Deploy?","predefinedOptions":["yes","no"]}`)
	other, _ := create(t, s.svc, mint(t, "alice"), `{"message":"Other?","predefinedOptions":["yes","no"]}`)
	sess, err := s.svc.core.Get(ctx, owner, id)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.svc.core.IssueAnswerToken(ctx, sess, feedback.ViaNtfy, "")
	if err != nil {
		t.Fatal(err)
	}
	body := func(token, option string) string {
		b, _ := json.Marshal(map[string]string{"token": token, "option": option})
		return string(b)
	}
	const js = "application/json"
	for _, c := range []struct {
		name, path, ctype, body string
		status                  int
		want                    string
	}{
		{"no content type", "/feedback/" + id + "/quick", "", body(tok, "yes"), 415, "application/json"},
		{"form post", "/feedback/" + id + "/quick", "application/x-www-form-urlencoded", "token=" + tok + "&option=yes", 415, "application/json"},
		{"not json", "/feedback/" + id + "/quick", js, "yes please", 400, "must be one JSON object"},
		{"array", "/feedback/" + id + "/quick", js, `["yes"]`, 400, "must be one JSON object"},
		{"two objects", "/feedback/" + id + "/quick", js, body(tok, "yes") + body(tok, "no"), 400, "one JSON object"},
		{"unknown field", "/feedback/" + id + "/quick", js, `{"token":"` + tok + `","option":"yes","freeText":"sneaky"}`, 400, "one JSON object"},
		{"option as list", "/feedback/" + id + "/quick", js, `{"token":"` + tok + `","option":["yes","no"]}`, 400, "one JSON object"},
		{"no token", "/feedback/" + id + "/quick", js, `{"option":"yes"}`, 400, `\"token\" is required`},
		{"no option", "/feedback/" + id + "/quick", js, `{"token":"` + tok + `"}`, 400, `\"option\" is required`},
		{"option not offered", "/feedback/" + id + "/quick", js, body(tok, "maybe"), 400, "offered options"},
		{"huge body", "/feedback/" + id + "/quick", js, `{"token":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "64 KiB"},
		{"capability token is not an answer token", "/feedback/" + id + "/quick", js, body(capToken, "yes"), 404, "no session"},
		{"wrong token", "/feedback/" + id + "/quick", js, body("AAAAAAAAAAAAAAAAAAAAAAAAAA", "yes"), 404, "no session"},
		{"token of another question", "/feedback/" + other + "/quick", js, body(tok, "yes"), 404, "no session"},
		{"malformed id", "/feedback/..%2Fetc/quick", js, body(tok, "yes"), 404, ""},
		{"unknown id", "/feedback/" + uuidUnknown + "/quick", js, body(tok, "yes"), 404, "no session"},
		{"cross-site browser post", "/feedback/" + id + "/quick", js, body(tok, "yes"), 403, ""},
	} {
		hdr := []string{"Content-Type", c.ctype}
		if c.name == "cross-site browser post" {
			hdr = append(hdr, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		}
		resp, got := s.req(t, "POST", c.path, c.body, hdr...)
		if resp.StatusCode != c.status || !strings.Contains(got, c.want) {
			t.Errorf("%s: %d %.200s, want %d with %q", c.name, resp.StatusCode, got, c.status, c.want)
		}
		if resp.StatusCode >= 500 {
			t.Errorf("%s: server error %d", c.name, resp.StatusCode)
		}
	}
	if cur, _ := s.svc.core.Get(ctx, owner, id); cur.Status != store.StatusPending {
		t.Fatalf("a refused tap answered the question: %s", cur.Status)
	}

	// Eight taps at once (an impatient thumb, a retrying app): one answer,
	// the same success for the same option, never a second answer.
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Go(func() {
			resp, _ := s.req(t, "POST", "/feedback/"+id+"/quick", body(tok, "no"), "Content-Type", js)
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for _, c := range codes {
		if c != 200 {
			t.Fatalf("repeated taps of the same option got %v, want all 200", codes)
		}
	}
	resp, got := s.req(t, "POST", "/feedback/"+id+"/quick", body(tok, "yes"), "Content-Type", js)
	if resp.StatusCode != 409 || !strings.Contains(got, "already been answered") {
		t.Fatalf("a different option after the answer: %d %s", resp.StatusCode, got)
	}
	cur, err := s.svc.core.Get(ctx, owner, id)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Status != store.StatusSubmitted || strings.Join(cur.Result.SelectedOptions, ",") != "no" || cur.Result.Via != feedback.ViaNtfy {
		t.Fatalf("stored %s %+v", cur.Status, cur.Result)
	}
}
