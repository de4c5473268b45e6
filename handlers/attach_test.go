package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// testRules are the defaults, with a small quota where a test says so.
func testRules() feedback.AttachRules {
	return feedback.AttachRules{MaxSize: 5 << 20, MaxFiles: 5, Types: validate.AttachmentTypes, MaxBytesPerSubject: 100 << 20}
}

// filePart is one multipart field of an upload.
type filePart struct{ field, name, ctype, body string }

// multipartBody builds an upload body from parts, in order.
func multipartBody(t testing.TB, parts ...filePart) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		disp := fmt.Sprintf(`form-data; name=%q`, p.field)
		if p.name != "" {
			// As browsers write it: the name as it is, quotes escaped.
			disp += `; filename="` + strings.ReplaceAll(p.name, `"`, "%22") + `"`
		}
		h.Set("Content-Disposition", disp)
		if p.ctype != "" {
			h.Set("Content-Type", p.ctype)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(p.body))
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String(), mw.FormDataContentType()
}

// upload posts one file the way the page does and returns the response.
func upload(t testing.TB, h *Human, id, tok, name, ctype string, data []byte) *httptest.ResponseRecorder {
	t.Helper()
	body, ct := multipartBody(t, filePart{field: "token", body: tok}, filePart{field: "file", name: name, ctype: ctype, body: string(data)})
	return h.svc.do(t, h.Upload, call{method: "POST", id: id, body: body, ctype: ct})
}

// uploaded uploads and returns the new attachment's id.
func uploaded(t testing.TB, h *Human, id, tok, name, ctype string, data []byte) string {
	t.Helper()
	w := upload(t, h, id, tok, name, ctype, data)
	var ref store.AttachmentRef
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ref) != nil || ref.ID == "" {
		t.Fatalf("upload %s: %d %s", name, w.Code, w.Body)
	}
	return ref.ID
}

var pdfBytes = []byte("%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n")

// errorMessage is the message of an error body; it fails the test when
// the body is not {error:{code,message}}.
func errorMessage(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	errorCode(t, w)
	var eb errorBody
	_ = json.Unmarshal(w.Body.Bytes(), &eb)
	return eb.Error.Message
}

// TestUploadHostileInput: every refused upload is a 4xx that says what
// was wrong, and a stranger learns nothing.
func TestUploadHostileInput(t *testing.T) {
	var clock atomic.Int64 // added to the real time, for "expired"
	cfg := feedback.Config{Attach: testRules(), Now: func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }}
	cfg.Attach.MaxBytesPerSubject = 0
	s := newServiceWith(t, store.NewMemory(), cfg)
	h := newHumanFor(t, s)
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"Send a screenshot","allowFreeText":true}`)
	otherID, otherTok := create(t, s, alice, `{"message":"Another"}`)
	pngb := encodeImage(t, "png", 8, 8)
	big := append(bytes.Clone(pngb), make([]byte, 5<<20+1-len(pngb))...)

	type tc struct {
		name   string
		id     string
		body   string
		ctype  string
		status int
		says   string
	}
	mp := func(parts ...filePart) (string, string) { return multipartBody(t, parts...) }
	tokenPart := filePart{field: "token", body: capTok}
	file := func(name, ctype string, data []byte) filePart {
		return filePart{field: "file", name: name, ctype: ctype, body: string(data)}
	}
	var cases []tc
	add := func(name, id string, status int, says string, parts ...filePart) {
		b, ct := mp(parts...)
		cases = append(cases, tc{name, id, b, ct, status, says})
	}
	add("no token field", id, 400, `the first multipart field must be "token"`, file("a.png", "image/png", pngb))
	add("empty token", id, 404, "no session", filePart{field: "token"}, file("a.png", "image/png", pngb))
	add("wrong token", id, 404, "no session", filePart{field: "token", body: otherTok}, file("a.png", "image/png", pngb))
	add("unknown id", "00000000-0000-4000-8000-000000000000", 404, "no session", tokenPart, file("a.png", "image/png", pngb))
	add("malformed id", "../../etc", 404, "no session", tokenPart, file("a.png", "image/png", pngb))
	add("no file field", id, 400, `the second multipart field must be "file"`, tokenPart)
	add("file under another name", id, 400, `the second multipart field must be "file"`, tokenPart, filePart{field: "upload", name: "a.png", ctype: "image/png", body: string(pngb)})
	add("two files", id, 400, "one file per upload", tokenPart, file("a.png", "image/png", pngb), file("b.png", "image/png", pngb))
	add("too big", id, 413, "the file is larger than the limit of 5 MiB", tokenPart, file("big.png", "image/png", big))
	add("type not allowed", id, 415, "files of type image/svg+xml are not accepted here", tokenPart, file("a.svg", "image/svg+xml", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)))
	add("html not allowed", id, 415, "files of type text/html are not accepted", tokenPart, file("a.html", "text/html", []byte("<html><script>alert(1)</script>")))
	add("no declared type", id, 400, "the file's type is missing", tokenPart, file("a", "", pngb))
	add("html declared png", id, 400, "the file says it is image/png, but its bytes are text/html", tokenPart, file("a.png", "image/png", []byte("<html><script>alert(1)</script>")))
	add("pdf declared png", id, 400, "the file says it is image/png, but its bytes are application/pdf", tokenPart, file("a.png", "image/png", pdfBytes))
	add("png declared pdf", id, 400, "the file says it is application/pdf, but its bytes are image/png", tokenPart, file("a.pdf", "application/pdf", pngb))
	add("html declared text", id, 400, "the file says it is text/plain, but its bytes are text/html", tokenPart, file("a.txt", "text/plain", []byte("<!DOCTYPE html><p>hi")))
	add("text not utf-8", id, 400, "not UTF-8 text", tokenPart, file("a.txt", "text/plain", append([]byte(strings.Repeat("a", 600)), 0xff, 0xfe)))
	add("truncated png", id, 400, "not a readable image/png image", tokenPart, file("a.png", "image/png", pngb[:20]))
	add("empty file", id, 400, "the file is empty", tokenPart, file("a.txt", "text/plain", nil))
	add("png too wide", id, 400, "9000×1 pixels", tokenPart, file("w.png", "image/png", encodeImage(t, "png", 9000, 1)))
	cases = append(cases,
		tc{"not multipart", id, `{"token":"` + capTok + `"}`, "application/json", 415, "send the file as multipart/form-data"},
		tc{"no content type", id, "x", "-", 415, "send the file as multipart/form-data"},
		tc{"garbage multipart", id, "not a multipart body", "multipart/form-data; boundary=zzz", 400, `the first multipart field must be "token"`},
		tc{"cut off", id, "--zzz\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + capTok + "\r\n--zzz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n" + string(pngb), "multipart/form-data; boundary=zzz", 400, "cut off"},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := s.do(t, h.Upload, call{method: "POST", id: c.id, body: c.body, ctype: c.ctype})
			if w.Code != c.status || !strings.Contains(errorMessage(t, w), c.says) {
				t.Fatalf("%d %s, want %d saying %q", w.Code, w.Body, c.status, c.says)
			}
			if c.status == 415 && errorCode(t, w) != "unsupported_media_type" {
				t.Fatalf("code %s", errorCode(t, w))
			}
		})
	}

	// A cross-site page cannot post uploads (the same guard as the
	// page's other posts).
	body, ct := multipartBody(t, tokenPart, file("a.png", "image/png", pngb))
	req := httptest.NewRequest("POST", "https://fb.example/feedback/"+id+"/attachments", strings.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	req.SetPathValue("id", id)
	cw := httptest.NewRecorder()
	h.Protect(http.HandlerFunc(h.Upload)).ServeHTTP(cw, req)
	if cw.Code != http.StatusForbidden || errorCode(t, cw) != "cross_origin_request" {
		t.Fatalf("cross-site upload: %d %s", cw.Code, cw.Body)
	}

	// A good upload: the type comes from the bytes, the name is cleaned.
	w := upload(t, h, id, capTok, "../../evil\u202egnp.exe", "image/png", pngb)
	var ref store.AttachmentRef
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ref) != nil {
		t.Fatalf("good upload: %d %s", w.Code, w.Body)
	}
	if ref.MediaType != "image/png" || ref.Bytes != len(pngb) || ref.Name != "evil_gnp.exe" || len(ref.ID) < 20 || ref.URL != "" {
		t.Fatalf("ref %+v", ref)
	}

	// A question takes 3 × max_files uploads, then 429 saying so.
	for range 3 * 5 {
		uploaded(t, h, otherID, otherTok, "a.png", "image/png", pngb)
	}
	if w := upload(t, h, otherID, otherTok, "a.png", "image/png", pngb); w.Code != 429 || !strings.Contains(w.Body.String(), "this question has taken its 15 uploads") {
		t.Fatalf("16th upload: %d %s", w.Code, w.Body)
	}

	// Closed questions take no uploads: answered 409, withdrawn 410,
	// past its deadline 410.
	ansID, ansTok := create(t, s, alice, `{"message":"q","allowFreeText":true}`)
	if w := h.svc.do(t, h.Submit, call{method: "POST", id: ansID, body: `{"token":"` + ansTok + `","answer":{"freeText":"done"}}`}); w.Code != 200 {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	if w := upload(t, h, ansID, ansTok, "a.png", "image/png", pngb); w.Code != 409 {
		t.Fatalf("upload to an answered question: %d %s", w.Code, w.Body)
	}
	cID, cTok := create(t, s, alice, `{"message":"q"}`)
	if w := s.do(t, s.Cancel, call{method: "POST", id: cID, headers: bearer(alice)}); w.Code != 200 {
		t.Fatalf("cancel: %d %s", w.Code, w.Body)
	}
	if w := upload(t, h, cID, cTok, "a.png", "image/png", pngb); w.Code != 410 || !strings.Contains(w.Body.String(), "closed") {
		t.Fatalf("upload to a withdrawn question: %d %s", w.Code, w.Body)
	}
	eID, eTok := create(t, s, alice, `{"message":"q","timeout":30}`)
	clock.Store(int64(31 * time.Second))
	if w := upload(t, h, eID, eTok, "a.png", "image/png", pngb); w.Code != 410 {
		t.Fatalf("upload past the deadline: %d %s", w.Code, w.Body)
	}
	clock.Store(0)

	// attachments off: 403, and the page is not offered any.
	off := newServiceWith(t, store.NewMemory(), feedback.Config{})
	hoff := newHumanFor(t, off)
	oid, otok := create(t, off, alice, `{"message":"q"}`)
	if w := upload(t, hoff, oid, otok, "a.png", "image/png", pngb); w.Code != 403 || !strings.Contains(w.Body.String(), "takes no attachments") {
		t.Fatalf("attachments off: %d %s", w.Code, w.Body)
	}
	if v := view(t, hoff, oid, otok); v.Attach != nil {
		t.Fatalf("attachments off, yet the view offers %+v", v.Attach)
	}
	if v := view(t, h, id, capTok); v.Attach == nil || v.Attach.MaxSize != 5<<20 || v.Attach.MaxFiles != 5 || len(v.Attach.Types) != 6 {
		t.Fatalf("view attach %+v", v.Attach)
	}
}

// TestUploadQuotaPerSubject: one asker's questions share a byte quota, so
// that no question (nor many) can fill the store; another asker is not
// affected, and the refusal says how much is used.
func TestUploadQuotaPerSubject(t *testing.T) {
	cfg := feedback.Config{Attach: testRules()}
	cfg.Attach.MaxBytesPerSubject = 2500
	s := newServiceWith(t, store.NewMemory(), cfg)
	h := newHumanFor(t, s)
	alice, bob := mint(t, "alice"), mint(t, "bob")
	a1, t1 := create(t, s, alice, `{"message":"q"}`)
	a2, t2 := create(t, s, alice, `{"message":"q"}`)
	b1, bt1 := create(t, s, bob, `{"message":"q"}`)
	text := []byte(strings.Repeat("x", 1000))
	uploaded(t, h, a1, t1, "a.txt", "text/plain", text)
	uploaded(t, h, a2, t2, "b.txt", "text/plain", text)
	w := upload(t, h, a1, t1, "c.txt", "text/plain", text)
	if w.Code != 429 || !strings.Contains(w.Body.String(), "take up 2 KiB of the 2.4 KiB") || w.Header().Get("Retry-After") == "" {
		t.Fatalf("over quota: %d %s %v", w.Code, w.Body, w.Header())
	}
	// The refused upload took nothing: a smaller one still fits.
	uploaded(t, h, a2, t2, "d.txt", "text/plain", text[:400])
	uploaded(t, h, b1, bt1, "e.txt", "text/plain", text)
}

// answerWith submits through the page with the given attachment ids.
func answerWith(t testing.TB, h *Human, id, tok, text string, ids ...string) *httptest.ResponseRecorder {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"token": tok, "answer": map[string]any{"freeText": text, "attachments": ids, "nonce": "n-" + id}})
	return h.svc.do(t, h.Submit, call{method: "POST", id: id, body: string(b)})
}

// TestAttachmentsAnswerAndDownload: the submit names uploads of its own
// question only; the result lists them with owner-only download links
// that return the exact bytes with a type that can never run.
func TestAttachmentsAnswerAndDownload(t *testing.T) {
	s := newServiceWith(t, store.NewMemory(), feedback.Config{Attach: testRules()})
	h := newHumanFor(t, s)
	alice, bob := mint(t, "alice"), mint(t, "bob")
	id, capTok := create(t, s, alice, `{"message":"Screenshot please","allowFreeText":true}`)
	otherID, otherTok := create(t, s, alice, `{"message":"Other","allowFreeText":true}`)
	pngb := encodeImage(t, "png", 16, 9)
	poly := polyglotPNG(t)
	big := append(bytes.Clone(pdfBytes), bytes.Repeat([]byte{'%', 'x', '\n'}, (3<<20)/3)...)
	pngID := uploaded(t, h, id, capTok, "shot.png", "image/png", pngb)
	pdfID := uploaded(t, h, id, capTok, "spec.pdf", "application/pdf", big)
	polyID := uploaded(t, h, id, capTok, "poly.png", "image/png", poly)
	txtID := uploaded(t, h, id, capTok, "notes.txt", "text/plain", []byte("héllo\n"))
	unused := uploaded(t, h, id, capTok, "unused.png", "image/png", pngb)
	foreign := uploaded(t, h, otherID, otherTok, "other.png", "image/png", pngb)
	six := make([]string, 6)
	for i := range six {
		six[i] = uploaded(t, h, otherID, otherTok, "x.png", "image/png", pngb)
	}

	for _, c := range []struct {
		name string
		ids  []string
		says string
	}{
		{"too many", six, "attachments has 6 files; an answer carries at most 5"},
		{"another question's upload", []string{pngID, foreign}, "attachments[1] is not a file uploaded for this question"},
		{"unknown id", []string{"nosuchupload"}, "attachments[0] is not a file uploaded for this question"},
		{"duplicate", []string{pngID, pngID}, "attachments[1] names upload " + pngID + " a second time"},
		{"not a string", nil, "attachments must be an array of upload ids"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := `{"token":"` + capTok + `","answer":{"freeText":"x","attachments":`
			if c.ids == nil {
				body += `[1]}}`
			} else {
				b, _ := json.Marshal(c.ids)
				body += string(b) + `}}`
			}
			w := h.svc.do(t, h.Submit, call{method: "POST", id: id, body: body})
			if w.Code != 400 || !strings.Contains(errorMessage(t, w), c.says) {
				t.Fatalf("%d %s, want 400 saying %q", w.Code, w.Body, c.says)
			}
		})
	}

	// Files alone answer a question that takes free text.
	if w := answerWith(t, h, id, capTok, "", pngID, pdfID, polyID, txtID); w.Code != 200 {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	// Exactly once: the same nonce again is the same success; another
	// answer is a conflict, attachments or not.
	if w := answerWith(t, h, id, capTok, "", pngID, pdfID, polyID, txtID); w.Code != 200 {
		t.Fatalf("repeat: %d %s", w.Code, w.Body)
	}
	if w := h.svc.do(t, h.Submit, call{method: "POST", id: id, body: `{"token":"` + capTok + `","answer":{"freeText":"again","attachments":["` + unused + `"]}}`}); w.Code != 409 {
		t.Fatalf("second answer: %d %s", w.Code, w.Body)
	}

	w := s.do(t, s.Result, call{method: "GET", id: id, headers: bearer(alice)})
	var rr struct {
		Result store.Result `json:"result"`
	}
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &rr) != nil || len(rr.Result.Attachments) != 4 {
		t.Fatalf("result: %d %s", w.Code, w.Body)
	}
	want := map[string]struct {
		data        []byte
		ctype, disp string
	}{
		pngID:  {pngb, "image/png", `inline; filename=shot.png`},
		pdfID:  {big, "application/pdf", `attachment; filename=spec.pdf`},
		polyID: {poly, "image/png", `inline; filename=poly.png`},
		txtID:  {[]byte("héllo\n"), "text/plain; charset=utf-8", `attachment; filename=notes.txt`},
	}
	get := func(aid, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "https://fb.example/api/feedback/"+id+"/attachments/"+aid, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.SetPathValue("id", id)
		req.SetPathValue("aid", aid)
		w := httptest.NewRecorder()
		s.Attachment(w, req)
		return w
	}
	for i, a := range rr.Result.Attachments {
		wa := want[a.ID]
		if a.URL != "https://fb.example/api/feedback/"+id+"/attachments/"+a.ID || a.ID != []string{pngID, pdfID, polyID, txtID}[i] {
			t.Fatalf("attachment %d: %+v", i, a)
		}
		r := get(a.ID, alice)
		hd := r.Header()
		if r.Code != 200 || !bytes.Equal(r.Body.Bytes(), wa.data) || hd.Get("Content-Type") != wa.ctype || hd.Get("Content-Disposition") != wa.disp ||
			hd.Get("X-Content-Type-Options") != "nosniff" || hd.Get("Content-Security-Policy") != "default-src 'none'; sandbox" {
			t.Fatalf("download %s: %d %v (%d bytes)", a.Name, r.Code, hd, r.Body.Len())
		}
	}
	for _, c := range []struct {
		name, aid, tok string
		status         int
	}{
		{"another subject", pngID, bob, 404},
		{"no token", pngID, "", 401},
		{"an upload the answer does not carry", unused, alice, 404},
		{"another question's upload", foreign, alice, 404},
		{"unknown", "nosuch", alice, 404},
		{"path-like", "../" + pngID, alice, 404},
	} {
		if r := get(c.aid, c.tok); r.Code != c.status {
			t.Errorf("%s: %d %s", c.name, r.Code, r.Body)
		} else {
			errorCode(t, r)
		}
	}
	// An unanswered question has no attachments to download.
	req := httptest.NewRequest("GET", "https://fb.example/api/feedback/"+otherID+"/attachments/"+foreign, nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	req.SetPathValue("id", otherID)
	req.SetPathValue("aid", foreign)
	rw := httptest.NewRecorder()
	s.Attachment(rw, req)
	if rw.Code != 404 {
		t.Fatalf("unanswered: %d", rw.Code)
	}

	// MCP: the images as image content within the budget, everything
	// else as links to the owner's download URL.
	sess, err := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, id)
	if err != nil {
		t.Fatal(err)
	}
	sess.Result = withURLs(sess.Result, "https://fb.example", id)
	content := attachmentContent(context.Background(), s.core, sess)
	if len(content) != 4 {
		t.Fatalf("content %+v", content)
	}
	img, ok := content[0].(mcp.ImageContent)
	if !ok || img.MIMEType != "image/png" || img.Data != base64.StdEncoding.EncodeToString(pngb) {
		t.Fatalf("content[0] %#v", content[0])
	}
	link, ok := content[1].(mcp.ResourceLink)
	if !ok || link.URI != "https://fb.example/api/feedback/"+id+"/attachments/"+pdfID || link.MIMEType != "application/pdf" || link.Name != "spec.pdf" || link.Size == nil || *link.Size != int64(len(big)) {
		t.Fatalf("content[1] %#v", content[1])
	}
	if _, ok := content[3].(mcp.ResourceLink); !ok {
		t.Fatalf("content[3] %#v", content[3])
	}
	raw, _ := json.Marshal(content)
	if len(raw) > 256<<10 {
		t.Fatalf("the attachments take %d bytes of the MCP message", len(raw))
	}
}

// TestMCPImageBudget: images past the budget become links, so a result
// never outgrows the MCP message cap.
func TestMCPImageBudget(t *testing.T) {
	s := newServiceWith(t, store.NewMemory(), feedback.Config{Attach: testRules()})
	h := newHumanFor(t, s)
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"q","allowFreeText":true}`)
	pngb := encodeImage(t, "png", 8, 8)
	pad := append(bytes.Clone(pngb), make([]byte, 100<<10)...) // a PNG with 100 KiB after IEND
	var ids []string
	for range 3 {
		ids = append(ids, uploaded(t, h, id, capTok, "p.png", "image/png", pad))
	}
	if w := answerWith(t, h, id, capTok, "", ids...); w.Code != 200 {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	sess, err := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, id)
	if err != nil {
		t.Fatal(err)
	}
	sess.Result = withURLs(sess.Result, "https://fb.example", id)
	content := attachmentContent(context.Background(), s.core, sess)
	kinds := ""
	for _, c := range content {
		kinds += fmt.Sprintf("%T ", c)
	}
	if kinds != "mcp.ImageContent mcp.ResourceLink mcp.ResourceLink " {
		t.Fatalf("content kinds %s", kinds)
	}
}

// TestUnattach: the person takes a file out again: its bytes leave the
// store and the asker's quota, not the question's count of uploads; only
// a holder of the link may, only while the question is open.
func TestUnattach(t *testing.T) {
	cfg := feedback.Config{Attach: testRules()}
	cfg.Attach.MaxBytesPerSubject = 1500
	cfg.Attach.MaxFiles = 1 // 3 uploads per question
	st := store.NewMemory()
	s := newServiceWith(t, st, cfg)
	h := newHumanFor(t, s)
	alice := mint(t, "alice")
	id, capTok := create(t, s, alice, `{"message":"q","allowFreeText":true}`)
	_, otherTok := create(t, s, alice, `{"message":"q"}`)
	text := []byte(strings.Repeat("x", 1000))
	aid := uploaded(t, h, id, capTok, "a.txt", "text/plain", text)
	remove := func(id, aid, body string, ctype ...string) *httptest.ResponseRecorder {
		c := call{method: "DELETE", id: id, body: body}
		if len(ctype) > 0 {
			c.ctype = ctype[0]
		}
		req := httptest.NewRequest(c.method, "https://fb.example/feedback/"+id+"/attachments/"+aid, strings.NewReader(c.body))
		if c.ctype == "" {
			c.ctype = "application/json"
		}
		req.Header.Set("Content-Type", c.ctype)
		req.SetPathValue("id", id)
		req.SetPathValue("aid", aid)
		w := httptest.NewRecorder()
		h.Unattach(w, req)
		return w
	}
	for _, c := range []struct {
		name, body, ctype string
		status            int
		says              string
	}{
		{"no token", `{}`, "", 404, "no session"},
		{"wrong token", `{"token":"` + otherTok + `"}`, "", 404, "no session"},
		{"not JSON", `token=x`, "application/x-www-form-urlencoded", 415, "application/json"},
		{"an answer too", `{"token":"` + capTok + `","answer":{}}`, "", 400, `removing a file takes only {"token":"…"}`},
		{"unknown member", `{"token":"` + capTok + `","file":"x"}`, "", 400, "the body must be one JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := remove(id, aid, c.body, c.ctype)
			if w.Code != c.status || !strings.Contains(errorMessage(t, w), c.says) {
				t.Fatalf("%d %s, want %d saying %q", w.Code, w.Body, c.status, c.says)
			}
		})
	}
	// The quota is full: a second file does not fit until the first goes.
	if w := upload(t, h, id, capTok, "b.txt", "text/plain", text); w.Code != 429 {
		t.Fatalf("over quota: %d %s", w.Code, w.Body)
	}
	if w := remove(id, aid, `{"token":"`+capTok+`"}`); w.Code != 204 {
		t.Fatalf("remove: %d %s", w.Code, w.Body)
	}
	if _, err := st.Load(t.Context(), store.AttachmentKey(id, aid, 0)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the bytes are still stored: %v", err)
	}
	if w := remove(id, aid, `{"token":"`+capTok+`"}`); w.Code != 204 {
		t.Fatalf("remove again: %d %s", w.Code, w.Body)
	}
	if w := answerWith(t, h, id, capTok, "x", aid); w.Code != 400 || !strings.Contains(errorMessage(t, w), "attachments[0] is not a file uploaded for this question") {
		t.Fatalf("answer naming a removed file: %d %s", w.Code, w.Body)
	}
	// The quota has room again; the question's count of uploads does not
	// go back (3 per file, and a refused upload does not count).
	bid := uploaded(t, h, id, capTok, "b.txt", "text/plain", text)
	if w := remove(id, bid, `{"token":"`+capTok+`"}`); w.Code != 204 {
		t.Fatalf("remove b: %d", w.Code)
	}
	cid := uploaded(t, h, id, capTok, "c.txt", "text/plain", text)
	if w := remove(id, cid, `{"token":"`+capTok+`"}`); w.Code != 204 {
		t.Fatalf("remove c: %d", w.Code)
	}
	if w := upload(t, h, id, capTok, "d.txt", "text/plain", text); w.Code != 429 || !strings.Contains(errorMessage(t, w), "taken its 3 uploads") {
		t.Fatalf("4th upload: %d %s", w.Code, w.Body)
	}
	// Closed questions: answered 409, withdrawn 410.
	if w := answerWith(t, h, id, capTok, "done"); w.Code != 200 {
		t.Fatalf("answer: %d %s", w.Code, w.Body)
	}
	if w := remove(id, bid, `{"token":"`+capTok+`"}`); w.Code != 409 {
		t.Fatalf("remove after the answer: %d %s", w.Code, w.Body)
	}
	cID, cTok := create(t, s, alice, `{"message":"q"}`)
	if w := s.do(t, s.Cancel, call{method: "POST", id: cID, headers: bearer(alice)}); w.Code != 200 {
		t.Fatal(w.Body)
	}
	if w := remove(cID, "x", `{"token":"`+cTok+`"}`); w.Code != 410 {
		t.Fatalf("remove after a withdrawal: %d %s", w.Code, w.Body)
	}
}
