package validate

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// FuzzDecodeCreate: no input panics, and whatever is accepted is within
// every limit, so nothing downstream has to check again.
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"message":"hi"}`,
		`{"message":"Pick","predefinedOptions":["a","b"],"timeout":300,"metadata":{"k":"v"},"multiSelect":true,"allowFreeText":false}`,
		`{"message":"hi","timeout":1e400}`, `{"message":"hi","timeout":"300"}`, `{"MESSAGE":"hi"}`,
		`{"message":"hi","message":"x"}`, `[` + strings.Repeat("[", 100), `{"message":"a\u202eb"}`, "{\"message\":\"\xff\"}",
		`{"message":"hi","predefinedOptions":[null,1,"a"]}`, `{"message":"hi","wait":true}`,
		// invisible characters: refused, allowed in place, and lookalike options
		`{"message":"Q","predefinedOptions":["No","No\u200b"]}`, `{"message":"Q","predefinedOptions":["\u2764","\u2764\ufe0f"]}`,
		`{"message":"ok\udb40\udc69\udb40\udc67"}`, `{"message":"\ud83d\udc69\u200d\ud83d\udcbb"}`, `{"message":"a\u200db"}`,
		`{"message":"\ud83c\udff4\udb40\udc67\udb40\udc62\udb40\udc73\udb40\udc63\udb40\udc74\udb40\udc7f"}`,
		`{"message":"1\ufe0f\u20e3 \u0645\u06cc\u200c\u062e"}`, `{"message":"x\u00ad\u2060\ufeff\u3164\u034f"}`,
		// described options, timeout policies, forms, clamped timeouts
		`{"message":"Q","preselectRecommended":true,"predefinedOptions":[{"label":"a","description":"d\nmore","recommended":true},"b"]}`,
		`{"message":"Q","predefinedOptions":[{"label":"a","recommended":true},{"label":"b","recommended":true}]}`,
		`{"message":"Q","predefinedOptions":[{"label":"a"},"a"]}`, `{"message":"Q","predefinedOptions":[{"label":"a","x":1}]}`,
		`{"message":"Q","predefinedOptions":["a","b"],"onTimeout":{"action":"choose","option":"b"}}`,
		`{"message":"Q","onTimeout":{"action":"keep"},"timeout":1}`, `{"message":"Q","onTimeout":{"action":"choose","option":"z"}}`,
		`{"message":"Q","timeout":-99999999999999999999}`, `{"message":"Q","timeout":99999999999999999999}`,
		`{"message":"F","questions":[{"id":"a","message":"m","kind":"single","options":["x","y"],"default":"x","required":true},` +
			`{"id":"b","message":"m","kind":"multi","options":["x","y"],"min":1,"max":2,"default":["y"]},{"id":"c","message":"m","kind":"text","max":5},` +
			`{"id":"d","message":"m","kind":"boolean","default":false},{"id":"e","message":"m","kind":"number","min":-1.5,"max":1e6,"default":0}]}`,
		`{"message":"F","questions":[{"id":"a","message":"m","kind":"number","min":5,"max":1}]}`,
		`{"message":"I","images":[{"type":"image","data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==","mimeType":"image/png"}]}`,
		`{"message":"I","images":[{"data":"UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==","mediaType":"image/webp","alt":"x"}]}`,
		`{"message":"I","images":[{"data":"PGh0bWw+","mediaType":"image/png"}]}`, `{"message":"I","images":[{"data":"***","mediaType":"image/gif"}]}`,
		`{"message":"F","questions":[{"id":"a","message":"m","kind":"date"},{"id":"a","message":"m","kind":"text"}]}`,
	} {
		f.Add([]byte(s))
	}
	lim := DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, extra, verr := DecodeCreate(body, lim, "wait")
		if verr != nil {
			if verr.Message == "" || req != nil {
				t.Fatalf("error without message or with a request: %+v", verr)
			}
			return
		}
		if !utf8.ValidString(req.Message) || strings.TrimSpace(req.Message) == "" || utf8.RuneCountInString(req.Message) > lim.MaxMessageLength {
			t.Fatalf("accepted message %q", req.Message)
		}
		if len(req.PredefinedOptions) > lim.MaxOptions {
			t.Fatalf("accepted %d options", len(req.PredefinedOptions))
		}
		seen := map[string]bool{}
		for _, o := range req.PredefinedOptions {
			if strings.TrimSpace(o) == "" || utf8.RuneCountInString(o) > lim.MaxOptionLength || strings.ContainsAny(o, "\n\r\x00") {
				t.Fatalf("accepted option %q", o)
			}
			if seen[skeleton(o)] {
				t.Fatalf("accepted options that look the same: %q", req.PredefinedOptions)
			}
			seen[skeleton(o)] = true
			checkVisible(t, o)
		}
		checkVisible(t, req.Message)
		if req.Timeout < lim.MinTimeout || req.Timeout > lim.MaxTimeout {
			t.Fatalf("accepted timeout %s", req.Timeout)
		}
		if req.Metadata != nil && (len(req.Metadata) > MaxMetadataBytes || !json.Valid(req.Metadata) || req.Metadata[0] != '{') {
			t.Fatalf("accepted metadata %s", req.Metadata)
		}
		if len(req.PredefinedOptions) == 0 && !req.AllowFreeText {
			t.Fatal("accepted a question nobody could answer")
		}
		if fm := req.Form; fm != nil {
			recommended := 0
			for i, o := range fm.Options {
				if o.Label != req.PredefinedOptions[i] {
					t.Fatalf("option details out of step with labels: %+v", fm.Options)
				}
				if o.Recommended {
					recommended++
				}
				if utf8.RuneCountInString(o.Description) > MaxDescriptionChars {
					t.Fatalf("accepted a description of %d chars", utf8.RuneCountInString(o.Description))
				}
				checkVisible(t, o.Description)
			}
			if recommended > 1 || (fm.PreselectRecommended && recommended == 0) {
				t.Fatalf("accepted %d recommended options, preselect %v", recommended, fm.PreselectRecommended)
			}
			if p := fm.OnTimeout; p != nil && (p.Action == "choose") != (p.Option != "") {
				t.Fatalf("accepted policy %+v", p)
			}
			if p := fm.OnTimeout; p != nil && p.Action == "choose" && !slices.Contains(req.PredefinedOptions, p.Option) {
				t.Fatalf("choose names %q, not an option", p.Option)
			}
			if len(fm.Questions) > lim.MaxQuestions || (fm.Questions != nil && len(req.PredefinedOptions) > 0) {
				t.Fatalf("accepted %d questions beside %d options", len(fm.Questions), len(req.PredefinedOptions))
			}
			ids := map[string]bool{}
			for _, q := range fm.Questions {
				if ids[q.ID] || !validQuestionID(q.ID) {
					t.Fatalf("accepted question id %q", q.ID)
				}
				ids[q.ID] = true
				if len(q.Default) > 0 {
					if _, verr := checkValue(&q, q.Default, "default"); verr != nil {
						t.Fatalf("accepted a default its own question refuses: %s", verr.Message)
					}
				}
			}
		}
		for i, im := range req.Images {
			if len(im.Data) > MaxImageBytes || http.DetectContentType(im.Data) != im.Ref.MediaType || !slices.Contains(ImageTypes, im.Ref.MediaType) ||
				req.Form == nil || req.Form.Images[i] != im.Ref {
				t.Fatalf("accepted image %d: %+v", i, im.Ref)
			}
		}
		for k := range extra {
			if k != "wait" {
				t.Fatalf("unexpected extra field %q", k)
			}
		}
	})
}

// FuzzDecodeSubmit: no input panics; an accepted answer checked against a
// question only ever names offered options.
func FuzzDecodeSubmit(f *testing.F) {
	for _, s := range []string{
		`{"selectedOptions":["a"]}`, `{"freeText":"x","nonce":"n-1"}`, `{"selectedOptions":"a"}`,
		`{"selectedOptions":["a","a"]}`, `{"nonce":"a b"}`, `{}`, `null`, "{\"freeText\":\"\xff\"}",
		`{"freeText":"ok\udb40\udc69"}`, `{"freeText":"ok\u200b"}`, `{"freeText":"\ud83e\uddd1\u200d\ud83d\ude80"}`,
		`{"answers":{"s":"x","m":["x","y"],"t":"hello","b":true,"n":2.5}}`, `{"answers":{"s":"z","n":1e999}}`,
		`{"answers":{"s":"x","s":"y"}}`, `{"answers":[1]}`, `{"answers":{"b":"true","n":"2"}}`, `{"answers":{"m":["x","x"],"t":"a\u202eb"}}`,
		`{"freeText":"see file","attachments":["abc","def"]}`, `{"attachments":["a","a"]}`, `{"attachments":[""]}`, `{"attachments":"a"}`,
		`{"attachments":[1]}`, `{"attachments":["a b"]}`, `{"attachments":null}`,
	} {
		f.Add([]byte(s))
	}
	options := []string{"a", "b", "c"}
	lo, hi := 0.0, 5.0
	form := []store.Question{
		{ID: "s", Kind: store.KindSingle, Options: []store.Option{{Label: "x"}, {Label: "y"}}, Required: true},
		{ID: "m", Kind: store.KindMulti, Options: []store.Option{{Label: "x"}, {Label: "y"}}, Max: &hi},
		{ID: "t", Kind: store.KindText, Max: &hi},
		{ID: "b", Kind: store.KindBoolean},
		{ID: "n", Kind: store.KindNumber, Min: &lo, Max: &hi},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, verr := DecodeSubmit(body)
		if verr != nil {
			if verr.Message == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if len(req.Nonce) > MaxNonceLength {
			t.Fatalf("accepted nonce of %d bytes", len(req.Nonce))
		}
		// Accepted upload ids are few, distinct, short printable ASCII.
		if len(req.Attachments) > MaxAttachmentIDs {
			t.Fatalf("accepted %d attachments", len(req.Attachments))
		}
		seenIDs := map[string]bool{}
		for _, a := range req.Attachments {
			if a == "" || len(a) > MaxAttachmentIDLength || strings.ContainsFunc(a, func(r rune) bool { return r < 0x21 || r > 0x7e }) || seenIDs[a] {
				t.Fatalf("accepted attachment id %q", a)
			}
			seenIDs[a] = true
		}
		for _, multi := range []bool{false, true} {
			if CheckAnswer(req, options, multi, true) != nil {
				continue
			}
			if !multi && len(req.SelectedOptions) > 1 {
				t.Fatalf("single-select accepted %v", req.SelectedOptions)
			}
			for _, o := range req.SelectedOptions {
				if o != "a" && o != "b" && o != "c" {
					t.Fatalf("accepted option %q that was not offered", o)
				}
			}
			if utf8.RuneCountInString(req.FreeText) > MaxFreeTextChars {
				t.Fatalf("accepted freeText of %d chars", utf8.RuneCountInString(req.FreeText))
			}
			checkVisible(t, req.FreeText)
		}
		// An accepted form answer is an object of the questions' ids, each
		// value of its question's type and within its bounds.
		out, verr := CheckForm(req, form, true)
		if verr != nil {
			return
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("answers %s are not an object: %v", out, err)
		}
		if _, ok := got["s"].(string); !ok {
			t.Fatalf("required single missing or mistyped in %s", out)
		}
		for k, v := range got {
			switch k {
			case "s":
				if v != "x" && v != "y" {
					t.Fatalf("single answered %v", v)
				}
			case "m":
				if a, ok := v.([]any); !ok || len(a) > 2 {
					t.Fatalf("multi answered %v", v)
				}
			case "t":
				if s, ok := v.(string); !ok || utf8.RuneCountInString(s) > 5 {
					t.Fatalf("text answered %v", v)
				}
			case "b":
				if _, ok := v.(bool); !ok {
					t.Fatalf("boolean answered %v", v)
				}
			case "n":
				if n, ok := v.(float64); !ok || n < 0 || n > 5 {
					t.Fatalf("number answered %v", v)
				}
			default:
				t.Fatalf("answer to an unknown question %q", k)
			}
		}
	})
}

// checkVisible: accepted text has no invisible character outside the places
// real text needs one (joiners and presentation selectors between visible
// characters, the tags of a recommended flag).
func checkVisible(t *testing.T, s string) {
	t.Helper()
	for i, r := range s {
		if !isInvisible(r) {
			continue
		}
		prev, _ := utf8.DecodeLastRuneInString(s[:i])
		switch {
		case (r == 0x200C || r == 0x200D) && prev >= 0x80:
		case (r == 0xFE0E || r == 0xFE0F) && prev != 0xFE0E && prev != 0xFE0F:
		case r >= 0xE0020 && r <= 0xE007F && inFlagTag(s, i):
		default:
			t.Fatalf("accepted %q with the invisible U+%04X at byte %d", s, r, i)
		}
	}
}

// FuzzCheckFile: an accepted file's type is on the allow-list and is what
// the sniffer says its bytes are; a kept file name is one safe path element.
func FuzzCheckFile(f *testing.F) {
	for _, c := range []struct{ data, declared, name string }{
		{"%PDF-1.7\n", "application/pdf", "a.pdf"}, {"hello\n", "text/plain", "../../etc/passwd"},
		{"<html><script>", "text/plain", "x\u202egnp.exe"}, {"\x89PNG\r\n\x1a\n", "image/png", "C:\\a\\b.png"},
		{"GIF89a", "image/gif; charset=x", "\"quoted\".gif"}, {"", "", ""}, {"x", "text/plain;;", "."},
	} {
		f.Add([]byte(c.data), c.declared, c.name)
	}
	allowed := AttachmentTypes
	f.Fuzz(func(t *testing.T, data []byte, declared, name string) {
		mt, verr := CheckFile(data, declared, allowed)
		if verr != nil {
			if verr.Message == "" {
				t.Fatal("error without a message")
			}
		} else {
			sniffed, _, _ := strings.Cut(http.DetectContentType(data), ";")
			if !slices.Contains(allowed, mt) || sniffed != mt {
				t.Fatalf("accepted %q as %s (sniffed %s)", declared, mt, sniffed)
			}
			if mt == "text/plain" && !utf8.Valid(data) {
				t.Fatal("accepted text that is not UTF-8")
			}
		}
		clean := CleanFileName(name)
		if clean == "" || strings.ContainsAny(clean, "/\"\x00") || utf8.RuneCountInString(clean) > MaxFileNameChars || clean == "." || clean == ".." {
			t.Fatalf("CleanFileName(%q) = %q", name, clean)
		}
		for _, r := range clean {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("CleanFileName(%q) keeps %U", name, r)
			}
		}
	})
}
