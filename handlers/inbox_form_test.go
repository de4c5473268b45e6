package handlers

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestInboxRicherQuestions: the inbox carries what the answer page does
// (option descriptions, the recommended mark, forms of several questions,
// the asker's images), serves a question's images to a person who may see
// it (owner or addressed; anyone else gets the same 404 as for none) with
// the page's safe headers, and checks a form's answers exactly as the
// page's submit does, with messages naming the question.
func TestInboxRicherQuestions(t *testing.T) {
	s := newInboxServer(t, func(c *feedback.Config) {
		c.Limits = validate.DefaultLimits()
		c.Limits.AllowAddressing = true
	})
	png := encodeImage(t, "png", 16, 9)
	formID, _ := create(t, s.svc, mint(t, "alice"), `{"message":"Release plan","allowFreeText":false,"questions":[`+
		`{"id":"env","message":"Where?","kind":"single","options":[{"label":"staging","description":"safe first","recommended":true},"prod"],"required":true},`+
		`{"id":"n","message":"How many?","kind":"number","min":1,"max":5},`+
		`{"id":"ok","message":"Notify?","kind":"boolean"}]}`)
	descID, _ := create(t, s.svc, mint(t, "alice"), `{"message":"Which?","predefinedOptions":[{"label":"A","description":"the fast one","recommended":true},"B"],`+
		`"preselectRecommended":true,"images":[`+imageJSON(png, "image/png", "the chart")+`],"to":["carol"]}`)
	bobs, _ := create(t, s.svc, mint(t, "bob"), `{"message":"bob's","predefinedOptions":["yes"],"images":[`+imageJSON(png, "image/png", "")+`]}`)

	// The list carries the page's view of each.
	_, body := s.req(t, "GET", "/inbox/questions", "", "X-Test-Person", "alice")
	var list InboxList
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("list: %v %s", err, body)
	}
	byID := map[string]InboxItem{}
	for _, q := range list.Questions {
		byID[q.SessionID] = q
	}
	f, d := byID[formID], byID[descID]
	if len(f.Questions) != 3 || f.Questions[0].ID != "env" || f.Questions[0].Options[0].Description != "safe first" || !f.Questions[0].Options[0].Recommended {
		t.Errorf("the form in the inbox: %+v", f.Questions)
	}
	if len(d.OptionDetails) != 2 || d.OptionDetails[0].Description != "the fast one" || !d.OptionDetails[0].Recommended || !d.Preselect ||
		len(d.Images) != 1 || d.Images[0].Alt != "the chart" {
		t.Errorf("the described options in the inbox: %+v %v %+v", d.OptionDetails, d.Preselect, d.Images)
	}

	const js = "application/json"
	img := func(id, n string) string { return "/inbox/questions/" + id + "/image/" + n }
	ans := func(id string) string { return "/inbox/questions/" + id + "/answer" }
	for _, c := range []struct {
		name, path, person, body string
		cross                    bool
		status                   int
		want                     string
	}{
		{"image signed out", img(descID, "0"), "", "", false, 401, "sign in"},
		{"image of someone else's question", img(bobs, "0"), "alice", "", false, 404, "no session"},
		{"image of an unknown question", img(uuidUnknown, "0"), "alice", "", false, 404, "no session"},
		{"image of a malformed id", img("%3Cscript%3E", "0"), "alice", "", false, 404, "no session"},
		{"image out of range", img(descID, "1"), "alice", "", false, 404, "no such image"},
		{"image negative", img(descID, "-1"), "alice", "", false, 404, "no such image"},
		{"image not a number", img(descID, "x"), "alice", "", false, 404, "no such image"},
		{"image leading zero", img(descID, "00"), "alice", "", false, 404, "no such image"},
		{"image huge index", img(descID, "99999999999999999999"), "alice", "", false, 404, "no such image"},
		{"image of a question without images", img(formID, "0"), "alice", "", false, 404, "no such image"},
		{"image cross-site", img(descID, "0"), "alice", "", true, 403, "cross-site"},
		{"form: selectedOptions", ans(formID), "alice", `{"selectedOptions":["staging"]}`, false, 400, "answer with \"answers\""},
		{"form: required missing", ans(formID), "alice", `{"answers":{"n":2}}`, false, 400, `question "env" is required`},
		{"form: not an option", ans(formID), "alice", `{"answers":{"env":"moon"}}`, false, 400, `"env"`},
		{"form: number out of range", ans(formID), "alice", `{"answers":{"env":"prod","n":9}}`, false, 400, `"n"`},
		{"form: number as string", ans(formID), "alice", `{"answers":{"env":"prod","n":"2"}}`, false, 400, `"n"`},
		{"form: boolean as string", ans(formID), "alice", `{"answers":{"env":"prod","ok":"true"}}`, false, 400, `"ok"`},
		{"form: unknown id", ans(formID), "alice", `{"answers":{"env":"prod","zzz":1}}`, false, 400, `"zzz" is not the id of a question`},
		{"form: answers not an object", ans(formID), "alice", `{"answers":[1]}`, false, 400, "answers must be an object"},
		{"form: free text not allowed", ans(formID), "alice", `{"answers":{"env":"prod"},"freeText":"hi"}`, false, 400, "does not take free text"},
		{"options: answers to a single question", ans(descID), "alice", `{"answers":{"x":1}}`, false, 400, "this question takes selectedOptions"},
		{"form of someone else's", ans(bobs), "alice", `{"answers":{"env":"prod"}}`, false, 404, "no session"},
	} {
		hdr := []string{"X-Test-Person", c.person}
		if c.body != "" {
			hdr = append(hdr, "Content-Type", js)
		}
		if c.cross {
			hdr = append(hdr, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		}
		var h []string
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i+1] != "" {
				h = append(h, hdr[i], hdr[i+1])
			}
		}
		resp, got := s.req(t, "POST", c.path, c.body, h...)
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal([]byte(got), &e) == nil && e.Error.Message != "" {
			got = e.Error.Message // as the person reads it, not JSON-escaped
		}
		if resp.StatusCode != c.status || !strings.Contains(got, c.want) {
			t.Errorf("%s: %d %.200s, want %d with %q", c.name, resp.StatusCode, got, c.status, c.want)
		}
	}

	// The image, to alice (the owner) and to carol (addressed), with the
	// page's headers: the bytes as stored, their sniffed type, no guessing,
	// a policy under which it runs nothing.
	for _, who := range []string{"alice", "carol"} {
		resp, got := s.req(t, "POST", img(descID, "0"), "", "X-Test-Person", who)
		if resp.StatusCode != 200 || !bytes.Equal([]byte(got), png) {
			t.Fatalf("%s: image %d (%d bytes)", who, resp.StatusCode, len(got))
		}
		hd := resp.Header
		if hd.Get("Content-Type") != "image/png" || hd.Get("X-Content-Type-Options") != "nosniff" ||
			hd.Get("Content-Security-Policy") != imageCSP || !strings.HasPrefix(hd.Get("Cache-Control"), "no-store") {
			t.Errorf("%s: image headers %v", who, hd)
		}
	}

	// A valid form answer is stored typed, once, as given in the inbox.
	const good = `{"answers":{"env":"staging","n":3,"ok":false},"nonce":"n1"}`
	for range 2 {
		if resp, got := s.req(t, "POST", ans(formID), good, "Content-Type", js, "X-Test-Person", "alice"); resp.StatusCode != 200 {
			t.Fatalf("form answer: %d %s", resp.StatusCode, got)
		}
	}
	sess, err := s.svc.core.Get(t.Context(), store.Owner{Subject: "alice"}, formID)
	if err != nil {
		t.Fatal(err)
	}
	if string(sess.Result.Answers) != `{"env":"staging","n":3,"ok":false}` || sess.Result.AnsweredBy != "alice" {
		t.Fatalf("stored %s by %q", sess.Result.Answers, sess.Result.AnsweredBy)
	}
	// Carol, addressed, answers the described one.
	if resp, got := s.req(t, "POST", ans(descID), `{"selectedOptions":["A"],"nonce":"c1"}`, "Content-Type", js, "X-Test-Person", "carol"); resp.StatusCode != 200 {
		t.Fatalf("carol's answer: %d %s", resp.StatusCode, got)
	}
}
