package handlers

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestInboxAttachHostileInput: the inbox's upload and remove refuse, with
// a 4xx that says why, whoever is signed out, anyone but the owner or
// the addressed person (the same 404 as no question), cross-site pages,
// files too big or of a type not allowed, and an answered question; and a
// file uploaded from the inbox is carried by the inbox's answer exactly as
// the page's submit carries it.
func TestInboxAttachHostileInput(t *testing.T) {
	// The clock moves on only for the expired question below (atomic: the
	// server's goroutines read it).
	var skew atomic.Int64
	s := newInboxServer(t, func(c *feedback.Config) {
		c.Attach = testRules()
		c.Attach.MaxSize = 4 << 10
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	mine, _ := create(t, s.svc, mint(t, "alice"), `{"message":"logs?"}`)
	bobs, _ := create(t, s.svc, mint(t, "bob"), `{"message":"bob's"}`)
	pdf, pdfType := multipartBody(t, filePart{field: "file", name: "report.pdf", ctype: "application/pdf", body: string(pdfBytes)})
	svg, svgType := multipartBody(t, filePart{field: "file", name: "a.svg", ctype: "image/svg+xml", body: `<svg xmlns="http://www.w3.org/2000/svg"/>`})
	big, bigType := multipartBody(t, filePart{field: "file", name: "big.pdf", ctype: "application/pdf", body: string(pdfBytes) + strings.Repeat("x", 40<<10)})
	tokFirst, tokType := multipartBody(t, filePart{field: "token", body: "x"}, filePart{field: "file", name: "report.pdf", body: string(pdfBytes)})
	two, twoType := multipartBody(t, filePart{field: "file", name: "a.pdf", body: string(pdfBytes)}, filePart{field: "file", name: "b.pdf", body: string(pdfBytes)})
	up := func(id string) string { return "/inbox/questions/" + id + "/attachments" }
	for _, c := range []struct {
		name, method, path, person, ctype, body string
		crossSite                               bool
		status                                  int
		want                                    string
	}{
		{"upload signed out", "POST", up(mine), "", pdfType, pdf, false, 401, "sign in"},
		{"upload sign-in down", "POST", up(mine), "broken", pdfType, pdf, false, 503, "could not be checked"},
		{"upload someone else's", "POST", up(bobs), "alice", pdfType, pdf, false, 404, "no session"},
		{"upload unknown", "POST", up(uuidUnknown), "alice", pdfType, pdf, false, 404, "no session"},
		{"upload malformed id", "POST", up("%3Cscript%3E"), "alice", pdfType, pdf, false, 404, "no session"},
		{"upload cross-site", "POST", up(mine), "alice", pdfType, pdf, true, 403, ""},
		{"upload not multipart", "POST", up(mine), "alice", "application/json", `{}`, false, 415, "multipart/form-data"},
		{"upload bad type", "POST", up(mine), "alice", svgType, svg, false, 415, "image/svg+xml are not accepted"},
		{"upload too big", "POST", up(mine), "alice", bigType, big, false, 413, "4 KiB"},
		{"upload wrong field", "POST", up(mine), "alice", tokType, tokFirst, false, 400, "needs no token"},
		{"upload two files", "POST", up(mine), "alice", twoType, two, false, 400, "one file per upload"},
		{"upload empty multipart", "POST", up(mine), "alice", "multipart/form-data; boundary=x", "--x--\r\n", false, 400, "needs no token"},
		{"upload with GET", "GET", up(mine), "alice", "", "", false, 405, ""},
		{"remove signed out", "DELETE", up(mine) + "/abc", "", "", "", false, 401, "sign in"},
		{"remove someone else's", "DELETE", up(bobs) + "/abc", "alice", "", "", false, 404, "no session"},
		{"remove cross-site", "DELETE", up(mine) + "/abc", "alice", "", "", true, 403, ""},
		{"remove unknown upload is fine", "DELETE", up(mine) + "/abc", "alice", "", "", false, 204, ""},
	} {
		hdr := []string{"X-Test-Person", c.person, "Content-Type", c.ctype}
		if c.crossSite {
			hdr = append(hdr, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		}
		var clean []string
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i+1] != "" {
				clean = append(clean, hdr[i], hdr[i+1])
			}
		}
		resp, body := s.req(t, c.method, c.path, c.body, clean...)
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %.200s, want %d with %q", c.name, resp.StatusCode, body, c.status, c.want)
		}
		if resp.StatusCode >= 400 && resp.StatusCode != 405 && !strings.Contains(body, `"message"`) {
			t.Errorf("%s: the error does not say what was wrong: %s", c.name, body)
		}
	}

	// Alice uploads two files, takes one out, and answers with the other.
	ids := make([]string, 2)
	for i := range ids {
		resp, body := s.req(t, "POST", up(mine), pdf, "X-Test-Person", "alice", "Content-Type", pdfType)
		var ref store.AttachmentRef
		if resp.StatusCode != 201 || json.Unmarshal([]byte(body), &ref) != nil || ref.ID == "" || ref.MediaType != "application/pdf" || ref.Name != "report.pdf" {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
		ids[i] = ref.ID
	}
	if resp, body := s.req(t, "DELETE", up(mine)+"/"+ids[1], "", "X-Test-Person", "alice"); resp.StatusCode != 204 {
		t.Fatalf("remove: %d %s", resp.StatusCode, body)
	}
	const js = "application/json"
	if resp, body := s.req(t, "POST", "/inbox/questions/"+mine+"/answer", `{"freeText":"here","attachments":["`+ids[1]+`"]}`, "X-Test-Person", "alice", "Content-Type", js); resp.StatusCode != 400 || !strings.Contains(body, "upload it again") {
		t.Fatalf("answer naming a removed upload: %d %s", resp.StatusCode, body)
	}
	if resp, body := s.req(t, "POST", "/inbox/questions/"+mine+"/answer", `{"freeText":"here","attachments":["`+ids[0]+`"]}`, "X-Test-Person", "alice", "Content-Type", js); resp.StatusCode != 200 {
		t.Fatalf("answer: %d %s", resp.StatusCode, body)
	}
	got, err := s.svc.core.Get(t.Context(), store.Owner{Subject: "alice"}, mine)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result == nil || len(got.Result.Attachments) != 1 || got.Result.Attachments[0].ID != ids[0] || got.Result.Via != feedback.ViaInbox {
		t.Fatalf("stored answer: %+v", got.Result)
	}
	data, _, err := s.svc.core.Attachment(t.Context(), got, ids[0])
	if err != nil || string(data) != string(pdfBytes) {
		t.Fatalf("the attached bytes: %q, %v", data, err)
	}
	// An answered question takes no more files, and keeps the ones it has.
	if resp, body := s.req(t, "POST", up(mine), pdf, "X-Test-Person", "alice", "Content-Type", pdfType); resp.StatusCode != 409 || !strings.Contains(body, `"message"`) {
		t.Fatalf("upload to an answered question: %d %s", resp.StatusCode, body)
	}
	if resp, body := s.req(t, "DELETE", up(mine)+"/"+ids[0], "", "X-Test-Person", "alice"); resp.StatusCode != 409 {
		t.Fatalf("remove from an answered question: %d %s", resp.StatusCode, body)
	}

	// A withdrawn question, and one past its deadline, take no file.
	withdrawn, _ := create(t, s.svc, mint(t, "alice"), `{"message":"never mind"}`)
	if _, err := s.svc.core.Withdraw(t.Context(), store.Owner{Subject: "alice"}, withdrawn); err != nil {
		t.Fatal(err)
	}
	if resp, body := s.req(t, "POST", up(withdrawn), pdf, "X-Test-Person", "alice", "Content-Type", pdfType); resp.StatusCode != 410 || !strings.Contains(body, `"message"`) {
		t.Fatalf("upload to a withdrawn question: %d %s", resp.StatusCode, body)
	}
	late, _ := create(t, s.svc, mint(t, "alice"), `{"message":"quick","timeout":60}`)
	skew.Store(int64(2 * time.Minute))
	if resp, body := s.req(t, "POST", up(late), pdf, "X-Test-Person", "alice", "Content-Type", pdfType); resp.StatusCode != 410 || !strings.Contains(body, `"message"`) {
		t.Fatalf("upload to an expired question: %d %s", resp.StatusCode, body)
	}
}
