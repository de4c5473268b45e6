package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// attachSites: the attachments block spelled out, as an operator would.
const attachSites = `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		attachments {
			max_size 5MiB
			max_files 5
			types image/png image/jpeg application/pdf text/plain
			max_bytes_per_subject 100MiB
		}
	}
}
`

// TestAnswerPageAttachments: the person pastes a PNG and picks a PDF on a
// phone-sized page in real Chromium, watches both uploads finish, reloads
// (the draft keeps the uploads), and sends; a 6 MiB file is refused in the
// page before any upload. The waiting MCP call (the official TypeScript
// SDK) gets the PNG as image content and the PDF as a resource link it
// downloads with its own token; the REST result lists both with owner-only
// download links that return the exact bytes.
func TestAnswerPageAttachments(t *testing.T) {
	c := startMCPCaddy(t, attachSites)
	browser := newBrowser(t)
	alice, bob := token(t, "alice"), token(t, "bob")

	shot := pngOf(t, 64, 40)
	pdf := make([]byte, 300<<10)
	_, _ = rand.Read(pdf)
	copy(pdf, "%PDF-1.7\n")
	dir := t.TempDir()
	pdfPath := filepath.Join(dir, "report.pdf")
	bigPath := filepath.Join(dir, "huge.pdf")
	big := make([]byte, 6<<20)
	copy(big, "%PDF-1.7\n")
	for p, b := range map[string][]byte{pdfPath: pdf, bigPath: big} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

	p := runScript(t, "questions.mjs", "http", c.HTTP+"/mcp", "attachments", alice)
	created := asResult(t, p.expect("created"))
	link, _ := created.Structured["feedbackUrl"].(string)
	id, _ := created.Structured["sessionId"].(string)
	if created.IsError || !strings.Contains(link, "#t=") {
		t.Fatalf("created %+v", created)
	}

	tab := newTab(t, browser, phone)
	step(t, tab, "open", chromedp.Navigate(link))
	waitState(t, tab, "pending")
	waitFor(t, tab, "the attach controls", `!document.getElementById('attach-wrap').hidden`)
	if got := eval[string](t, tab, `document.getElementById('attach-hint').textContent + '|' + document.getElementById('attach-input').accept`); got !=
		"Paste, drop or choose up to 5 files of at most 5 MiB each (PNG, JPEG, PDF, TXT).|image/png,image/jpeg,application/pdf,text/plain" {
		t.Errorf("hint and accept %q", got)
	}

	// Paste: a synthetic paste event carrying the PNG in a DataTransfer,
	// which is what Chromium dispatches when a screenshot is pasted
	// (headless Chromium has no system clipboard to paste from).
	step(t, tab, "paste a screenshot", chromedp.Evaluate[chromedp.Void](`(function () {
		var bin = atob('`+base64.StdEncoding.EncodeToString(shot)+`');
		var bytes = new Uint8Array(bin.length);
		for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
		var dt = new DataTransfer();
		dt.items.add(new File([bytes], 'image.png', { type: 'image/png' }));
		document.getElementById('freetext').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
	})()`))
	// Pick: the real file input, with a file from disk.
	step(t, tab, "pick a PDF", chromedp.SetUploadFiles(chromedp.ID("attach-input"), []string{pdfPath}))
	waitFor(t, tab, "both uploads done", `document.querySelectorAll('#attach-list li[data-state="done"]').length === 2`)
	if got := eval[string](t, tab, `Array.from(document.querySelectorAll('#attach-list li')).map(function (li) { return li.querySelector('.attach-name').textContent + ':' + li.querySelector('progress').value; }).join('|')`); got != fmt.Sprintf("image.png (%d B):100|report.pdf (300 KiB):100", len(shot)) {
		t.Errorf("upload list %q", got)
	}

	// Text copied from a document, with a picture of itself: a text paste,
	// not an attachment.
	step(t, tab, "paste text with a picture", chromedp.Evaluate[chromedp.Void](`(function () {
		var dt = new DataTransfer();
		dt.setData('text/plain', 'copied words');
		dt.items.add(new File([new Uint8Array([137, 80, 78, 71])], 'image.png', { type: 'image/png' }));
		document.getElementById('freetext').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
	})()`))
	if n := eval[int](t, tab, `document.querySelectorAll('#attach-list li').length`); n != 2 {
		t.Errorf("a text paste added a file: %d listed", n)
	}

	// Too large: refused in the page, with the reason, before any upload.
	step(t, tab, "pick a 6 MiB file", chromedp.SetUploadFiles(chromedp.ID("attach-input"), []string{bigPath}))
	waitFor(t, tab, "the size refusal", `!document.getElementById('attach-error').hidden`)
	if got := eval[string](t, tab, `document.getElementById('attach-error').textContent + '|' + document.querySelectorAll('#attach-list li').length`); got !=
		"huge.pdf is 6 MiB; files may be at most 5 MiB. It was not uploaded.|2" {
		t.Errorf("6 MiB file: %q", got)
	}
	screenshot(t, tab, "attachments-en-phone")
	checkAxe(t, tab, "attachments-en-phone")

	// A reload keeps the uploads (by id, in the draft).
	step(t, tab, "type", chromedp.Focus(chromedp.ID("freetext")), chromedp.KeyEvent("see the screenshot"))
	step(t, tab, "reload", chromedp.Reload(), chromedp.WaitReady(chromedp.ID("freetext")))
	waitState(t, tab, "pending")
	waitFor(t, tab, "the uploads restored", `document.querySelectorAll('#attach-list li[data-state="done"]').length === 2`)
	step(t, tab, "send", chromedp.Focus(chromedp.ID("freetext")), chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	waitFor(t, tab, "the answer sent", `document.getElementById('main').dataset.state === 'submitted' || !!document.getElementById('form-error').textContent`)
	if got := eval[string](t, tab, `document.getElementById('form-error').textContent`); got != "" {
		t.Fatalf("sending failed: %s", got)
	}
	if got := eval[string](t, tab, `document.getElementById('given-files').textContent`); !strings.Contains(got, "image.png") || !strings.Contains(got, "report.pdf") {
		t.Errorf("shown files %q", got)
	}
	checkAxe(t, tab, "attachments-en-phone-submitted")
	noXSS(t, tab, "attachments")

	// MCP: the PNG as image content, the PDF as a link the client follows
	// with its own token.
	ev := p.expect("result")
	res := asResult(t, ev)
	var blocks []struct {
		Type, MimeType, URI, Name, ContentType, Sha256 string
		Size, Status                                   int
	}
	b, _ := json.Marshal(ev["blocks"])
	if err := json.Unmarshal(b, &blocks); err != nil {
		t.Fatal(err)
	}
	if res.IsError || res.Structured["status"] != "submitted" || len(blocks) != 3 ||
		blocks[1].Type != "image" || blocks[1].MimeType != "image/png" || blocks[1].Sha256 != sum(shot) ||
		blocks[2].Type != "resource_link" || blocks[2].MimeType != "application/pdf" || blocks[2].Name != "report.pdf" || blocks[2].Size != len(pdf) ||
		blocks[2].Status != 200 || blocks[2].ContentType != "application/pdf" || blocks[2].Sha256 != sum(pdf) {
		t.Fatalf("MCP result %+v, blocks %+v", res, blocks)
	}
	if !strings.Contains(res.Text, "They attached 2 file(s)") {
		t.Errorf("text %q", res.Text)
	}
	p.finish()

	// REST: both listed, with download links for the owner only.
	r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+id+"/result", "", "Authorization", "Bearer "+alice)
	var rr struct {
		Result struct {
			FreeText    string `json:"freeText"`
			Attachments []struct {
				ID, Name, MediaType, URL string
				Bytes                    int
			} `json:"attachments"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.Body), &rr); err != nil || r.Status != 200 || len(rr.Result.Attachments) != 2 || rr.Result.FreeText != "see the screenshot" {
		t.Fatalf("result %d %s", r.Status, r.Body)
	}
	for i, want := range [][]byte{shot, pdf} {
		a := rr.Result.Attachments[i]
		if a.URL != c.HTTP+"/api/feedback/"+id+"/attachments/"+a.ID || a.Bytes != len(want) {
			t.Errorf("attachment %d: %+v", i, a)
		}
		got := do(t, c.Client, "GET", a.URL, "", "Authorization", "Bearer "+alice)
		if got.Status != 200 || got.Body != string(want) || got.Header.Get("X-Content-Type-Options") != "nosniff" ||
			got.Header.Get("Content-Security-Policy") != "default-src 'none'; sandbox" || got.Header.Get("Content-Type") != a.MediaType {
			t.Errorf("download %d: %d %v (%d bytes)", i, got.Status, got.Header, len(got.Body))
		}
		if other := do(t, c.Client, "GET", a.URL, "", "Authorization", "Bearer "+bob); other.Status != 404 {
			t.Errorf("bob downloads %s: %d", a.Name, other.Status)
		}
	}
	if d := do(t, c.Client, "GET", rr.Result.Attachments[1].URL, "", "Authorization", "Bearer "+alice); d.Header.Get("Content-Disposition") != "attachment; filename=report.pdf" {
		t.Errorf("pdf disposition %q", d.Header.Get("Content-Disposition"))
	}

	// A question withdrawn while files were attached: the unsent draft,
	// file names included, stays in view, read-only.
	cr, capTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Anything to add?","allowFreeText":true}`)
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("line one\nline two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tab2 := newTab(t, browser, phone)
	step(t, tab2, "open", chromedp.Navigate(pageURL(c.HTTP, cr.SessionID, "lang=en", capTok)))
	waitState(t, tab2, "pending")
	step(t, tab2, "pick a text file", chromedp.SetUploadFiles(chromedp.ID("attach-input"), []string{notes}))
	waitFor(t, tab2, "the upload done", `document.querySelectorAll('#attach-list li[data-state="done"]').length === 1`)
	// One more, then taken out again with its remove button.
	step(t, tab2, "pick a PDF", chromedp.SetUploadFiles(chromedp.ID("attach-input"), []string{pdfPath}))
	waitFor(t, tab2, "both done", `document.querySelectorAll('#attach-list li[data-state="done"]').length === 2`)
	step(t, tab2, "remove the PDF", chromedp.Click(chromedp.CSS(`#attach-list li:nth-child(2) button`)))
	waitFor(t, tab2, "one left", `document.querySelectorAll('#attach-list li').length === 1`)
	// The route through the real Caddy: DELETE with the token in the body
	// (204 again for an upload already gone), refused without it.
	del, err := chromedp.Run(tab2, chromedp.Evaluate[string](`Promise.all([history.state.fbToken, ''].map(function (tok) {
		return fetch(location.pathname + '/attachments/nosuchupload', {method: 'DELETE', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({token: tok})})
			.then(function (r) { return r.status; });
	})).then(function (s) { return s.join(','); })`, chromedp.EvalAwaitPromise))
	if err != nil || del != "204,404" {
		t.Errorf("DELETE upload: %q %v", del, err)
	}
	if w := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/cancel", "", "Authorization", "Bearer "+alice); w.Status != 200 {
		t.Fatalf("cancel %d %s", w.Status, w.Body)
	}
	waitState(t, tab2, "cancelled")
	if got := eval[string](t, tab2, `document.getElementById('draft').hidden + '|' + document.getElementById('draft-body').innerText`); !strings.HasPrefix(got, "false|") || !strings.Contains(got, "notes.txt") || strings.Contains(got, "report.pdf") {
		t.Errorf("draft after the withdrawal %q", got)
	}
	if eval[bool](t, tab2, `!!document.querySelector('#draft input, #draft button, #draft textarea')`) {
		t.Error("the draft is editable")
	}
	checkAxe(t, tab2, "attachments-draft-cancelled")
}
