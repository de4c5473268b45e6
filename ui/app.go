package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"strings"
)

// The MCP Apps view (app/): one self-contained HTML document that an MCP
// host renders in a sandboxed iframe. Hosts give that iframe no access to
// this site's origin, so its script, style and strings are inline; the
// question itself arrives later over postMessage (see app/view.js).

//go:embed app/view.html app/view.css app/view.js
var appFiles embed.FS

// AppMIMEType is the MIME type MCP Apps hosts require of a view.
const AppMIMEType = "text/html;profile=mcp-app"

var appHTML = mustBuildApp()

// AppHTML is the view document. It is the same for every question.
func AppHTML() string { return appHTML }

// appCSPFor is the view's own Content-Security-Policy, on top of whatever
// the host enforces: its one script and one style by hash, no inline
// handlers, no connections (it talks to the host by postMessage only), and
// images only from data: URLs, so a remote image in the agent's Markdown
// cannot track the person.
func appCSPFor(script, style string) string {
	return "default-src 'none'; script-src '" + hashSource(script) + "'; style-src '" + hashSource(style) +
		"'; img-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
}

func hashSource(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

func mustBuildApp() string {
	read := func(name string) string {
		b, err := appFiles.ReadFile("app/" + name)
		if err != nil {
			panic(fmt.Sprintf("ui: reading app/%s: %v", name, err))
		}
		return string(b)
	}
	js, css := read("view.js"), read("view.css")
	// A closing tag inside the inline script or style would end it early.
	if strings.Contains(strings.ToLower(js), "</script") || strings.Contains(strings.ToLower(css), "</style") {
		panic("ui: app/view.js or view.css contains a closing tag")
	}
	t := template.Must(template.New("view.html").Parse(read("view.html")))
	strs := map[string]map[string]string{"en": appStrings(En), "zh": appStrings(Zh)}
	var buf bytes.Buffer
	err := t.Execute(&buf, map[string]any{
		"CSP":     appCSPFor(js, css),
		"CSS":     template.CSS(css),
		"JS":      template.JS(js),
		"Strings": strs,
	})
	if err != nil {
		panic(fmt.Sprintf("ui: rendering app/view.html: %v", err))
	}
	return buf.String()
}

// appStrings are the page's strings the view shows, the "js." ones under
// their short names as the page's script sees them.
func appStrings(l Lang) map[string]string {
	out := map[string]string{}
	for k, v := range texts[l] {
		if name, ok := strings.CutPrefix(k, "js."); ok {
			out[name] = v
			continue
		}
		out[k] = v
	}
	return out
}
