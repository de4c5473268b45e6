package ui

import (
	"encoding/json"
	"html"
	"regexp"
	"strings"
	"testing"
)

// The view is one self-contained document whose own CSP admits exactly its
// inline script and style (by hash) and nothing from any other place.
func TestAppHTML(t *testing.T) {
	doc := AppHTML()
	script := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(doc, -1)
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(doc, -1)
	if len(script) != 1 || len(style) != 1 {
		t.Fatalf("%d executable scripts and %d styles, want one each", len(script), len(style))
	}
	csp := regexp.MustCompile(`http-equiv="Content-Security-Policy" content="([^"]+)"`).FindStringSubmatch(doc)
	if csp == nil {
		t.Fatal("no CSP meta tag")
	}
	policy := html.UnescapeString(csp[1])
	for _, want := range []string{
		"default-src 'none'",
		"script-src '" + hashSource(script[0][1]) + "'",
		"style-src '" + hashSource(style[0][1]) + "'",
		"connect-src 'none'", "img-src data:", "base-uri 'none'",
	} {
		if !strings.Contains(policy, want) {
			t.Errorf("CSP %q lacks %q", policy, want)
		}
	}
	if strings.Contains(policy, "unsafe-inline") {
		t.Errorf("CSP %q allows inline code", policy)
	}
	// Nothing is loaded from anywhere: no src/href attributes, no @import.
	if m := regexp.MustCompile(`(?i)(\ssrc=|\shref=|@import|https?://)`).FindString(doc); m != "" {
		t.Errorf("the view references something outside itself: %q", m)
	}
	// Both languages' strings are in it, under the names the script uses.
	raw := regexp.MustCompile(`(?s)<script type="application/json" id="fb-strings">(.*?)</script>`).FindStringSubmatch(doc)
	if raw == nil {
		t.Fatal("no strings")
	}
	var strs map[string]map[string]string
	if err := json.Unmarshal([]byte(raw[1]), &strs); err != nil {
		t.Fatalf("strings: %v", err)
	}
	for _, lang := range []string{"en", "zh"} {
		for _, key := range []string{"brand", "submit", "countdown", "err.choose", "app.waiting", "app.readonly", "submitted.heading"} {
			if strs[lang][key] == "" {
				t.Errorf("%s string %q missing", lang, key)
			}
		}
	}
	// Every data-t key the markup names exists.
	for _, m := range regexp.MustCompile(`data-t="([^"]+)"`).FindAllStringSubmatch(doc, -1) {
		if strs["en"][m[1]] == "" || strs["zh"][m[1]] == "" {
			t.Errorf("data-t=%q has no string", m[1])
		}
	}
}
