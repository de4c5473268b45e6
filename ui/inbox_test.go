package ui

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestInboxStrings: every string the inbox's template and script use
// exists (in both languages: TestStringsComplete compares the key sets).
func TestInboxStrings(t *testing.T) {
	tpl, err := files.ReadFile("templates/inbox.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\{\{t \.L "([^"]+)"\}\}`).FindAllSubmatch(tpl, -1) {
		if _, ok := texts[En][string(m[1])]; !ok {
			t.Errorf("inbox.html uses unknown string %q", m[1])
		}
	}
	js, err := files.ReadFile("static/inbox.js")
	if err != nil {
		t.Fatal(err)
	}
	given := inboxStrings(En) // the inbox's own, and the page's for attach.js
	for _, m := range regexp.MustCompile(`S(?:\.([a-zA-Z]+)|\['([a-zA-Z.]+)'\])`).FindAllSubmatch(js, -1) {
		key := string(m[1]) + string(m[2])
		if strings.HasSuffix(key, ".") { // S['status.' + status]: checked below
			continue
		}
		if _, ok := given[key]; !ok {
			t.Errorf("inbox.js uses unknown string %q", key)
		}
	}
	// What attach.js reads from the strings it is given.
	for _, k := range []string{"attach.hint", "attach.tooBig", "attach.tooMany", "attach.type", "attach.failed", "attach.uploading", "attach.done", "attach.remove", "attach.network"} {
		if given[k] == "" || inboxStrings(Zh)[k] == "" {
			t.Errorf("the inbox gets no string %s", k)
		}
	}
	for _, st := range []string{"pending", "submitted", "expired", "cancelled"} {
		if _, ok := texts[En]["inboxjs.status."+st]; !ok {
			t.Errorf("no string for status %s", st)
		}
	}
}

// TestRenderInbox: the shell names the person as text, whatever their
// name holds, and links only this site's files.
func TestRenderInbox(t *testing.T) {
	for _, l := range []Lang{En, Zh} {
		var b bytes.Buffer
		if err := RenderInbox(&b, InboxData{Lang: l, Person: `<img src=x onerror=alert(1)>`, StaticBase: "./feedback-static/"}); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if strings.Contains(out, "<img") || !strings.Contains(out, "&lt;img src=x") {
			t.Fatalf("the person's name was not escaped: %s", out)
		}
		for _, want := range []string{`lang="` + l.HTMLLang() + `"`, `rel="manifest"`, "./feedback-static/inbox.js?v=", T(l, "inbox.heading")} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: shell lacks %q", l, want)
			}
		}
		if strings.Contains(out, "http://") || strings.Contains(out, "https://") {
			t.Errorf("%s: shell names another site", l)
		}
	}
	if a, ok := LookupAsset("manifest.webmanifest"); !ok || a.ContentType != "application/manifest+json" {
		t.Fatal("the manifest is not served as application/manifest+json")
	}
}
