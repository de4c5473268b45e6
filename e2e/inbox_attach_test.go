package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"mime/multipart"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestInboxAttachments: signed in through Caddy's basic_auth (the @person
// matcher's /inbox/questions/* covers the upload and remove paths), the
// person picks a PDF from disk in the inbox's real file input, watches the
// upload finish, answers with it; the REST result lists it with an
// owner-only download that returns the same bytes. The inbox with the
// attach controls passes axe-core; bob's question takes no file from
// alice.
func TestInboxAttachments(t *testing.T) {
	c := startCaddy(t, inboxSites(t))
	tab := inboxTab(t, c)
	alice := token(t, "alice")
	q, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"Send me the report","allowFreeText":true}`)
	id := q.SessionID

	pdf := make([]byte, 200<<10)
	_, _ = rand.Read(pdf)
	copy(pdf, "%PDF-1.7\n")
	pdfPath := filepath.Join(t.TempDir(), "report.pdf")
	if err := os.WriteFile(pdfPath, pdf, 0o600); err != nil {
		t.Fatal(err)
	}

	waitFor(t, tab, "the question in the inbox", `document.querySelectorAll('#open li.card .attach:not([hidden])').length === 1`)
	step(t, tab, "pick a PDF", chromedp.SetUploadFiles(chromedp.ID("attach-"+id+"-input"), []string{pdfPath}))
	waitFor(t, tab, "the upload done", `document.querySelectorAll('#open li.card .attach-list li[data-state="done"]').length === 1`)
	if got := eval[string](t, tab, `(function () { var li = document.querySelector('#open li.card .attach-list li'); return li.querySelector('.attach-name').textContent + ':' + li.querySelector('progress').value + ':' + li.querySelector('.attach-status').textContent; })()`); got != "report.pdf (200 KiB):100:report.pdf uploaded" {
		t.Errorf("upload shown as %q", got)
	}
	checkAxe(t, tab, "inbox-attach")
	screenshot(t, tab, "inbox-attach")

	step(t, tab, "answer with the file",
		chromedp.SendKeys(chromedp.ID("text-"+id), "here it is"),
		chromedp.Click(chromedp.CSS(`#open li.card button[type="submit"]`)))
	waitFor(t, tab, "the question among the finished", `document.querySelectorAll('#done li.card').length === 1 && document.querySelectorAll('#open li.card').length === 0`)

	r := do(t, c.Client, "GET", c.HTTP+"/api/feedback/"+id+"/result", "", "Authorization", "Bearer "+alice)
	var rr struct {
		Result struct {
			FreeText    string `json:"freeText"`
			Via         string `json:"via"`
			Attachments []struct {
				ID, Name, MediaType, URL string
				Bytes                    int
			} `json:"attachments"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.Body), &rr); err != nil || r.Status != 200 || len(rr.Result.Attachments) != 1 || rr.Result.FreeText != "here it is" {
		t.Fatalf("result %d %s", r.Status, r.Body)
	}
	a := rr.Result.Attachments[0]
	if a.Name != "report.pdf" || a.MediaType != "application/pdf" || a.Bytes != len(pdf) || a.URL != c.HTTP+"/api/feedback/"+id+"/attachments/"+a.ID {
		t.Fatalf("attachment %+v", a)
	}
	dl := do(t, c.Client, "GET", a.URL, "", "Authorization", "Bearer "+alice)
	if dl.Status != 200 || dl.Body != string(pdf) {
		t.Fatalf("owner download: %d, %d bytes, same: %v", dl.Status, len(dl.Body), dl.Body == string(pdf))
	}
	if other := do(t, c.Client, "GET", a.URL, "", "Authorization", "Bearer "+token(t, "bob")); other.Status != 404 {
		t.Fatalf("bob downloading alice's attachment: %d", other.Status)
	}

	// Bob's question takes no file from alice (the same 404 as none), and
	// nothing is uploaded without the sign-in (basic_auth refuses first).
	bobs, _ := createSession(t, c.Client, c.HTTP, token(t, "bob"), `{"message":"bob's"}`)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "report.pdf")
	_, _ = fw.Write(pdf)
	_ = mw.Close()
	url := c.HTTP + "/inbox/questions/" + bobs.SessionID + "/attachments"
	if resp := do(t, c.Client, "POST", url, body.String(), "Authorization", aliceBasic, "Content-Type", mw.FormDataContentType()); resp.Status != 404 {
		t.Fatalf("alice uploading to bob's question: %d %s", resp.Status, resp.Body)
	}
	if resp := do(t, c.Client, "POST", url, body.String(), "Content-Type", mw.FormDataContentType()); resp.Status != 401 {
		t.Fatalf("uploading signed out: %d %s", resp.Status, resp.Body)
	}
}
