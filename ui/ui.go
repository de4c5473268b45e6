// Package ui holds the person's answer page: the html/template shell, its
// CSS and script (embedded with go:embed, so the page makes no request to
// any other site), the zh/en strings and the Markdown renderer for the
// agent's message. Nothing here knows about HTTP routing or Caddy.
//
// The page is a shell that carries no session data. The capability token
// is in the link's fragment (#t=…), which the browser never sends, so the
// server cannot tell on GET whether the visitor holds it; the script reads
// it and fetches the session as JSON with the token in a header. Every
// well-formed id therefore gets the same shell, and a wrong token or an
// unknown id get the same 404 from the JSON view: nothing hints whether an
// id exists.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"path"
)

//go:embed templates/*.html static/*
var files embed.FS

// Asset is one embedded static file.
type Asset struct {
	Name        string
	Body        []byte
	ContentType string
	// Version is a short content hash: asset URLs carry it, so a new build
	// never meets a stale cached copy and old copies may be cached for long.
	Version string
}

var (
	assets = map[string]*Asset{}
	page   *template.Template
	inbox  *template.Template
)

// types the mime package may not know on every system.
var contentTypes = map[string]string{
	".webmanifest": "application/manifest+json",
	".js":          "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".svg":         "image/svg+xml",
	".png":         "image/png",
}

func init() {
	entries, err := fs.ReadDir(files, "static")
	if err != nil {
		panic(fmt.Sprintf("ui: reading embedded static files: %v", err))
	}
	for _, e := range entries {
		b, err := files.ReadFile("static/" + e.Name())
		if err != nil {
			panic(fmt.Sprintf("ui: reading %s: %v", e.Name(), err))
		}
		sum := sha256.Sum256(b)
		ct := contentTypes[path.Ext(e.Name())]
		if ct == "" {
			ct = mime.TypeByExtension(path.Ext(e.Name()))
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		assets[e.Name()] = &Asset{Name: e.Name(), Body: b, ContentType: ct, Version: hex.EncodeToString(sum[:6])}
	}
	page = template.Must(template.New("page.html").Funcs(template.FuncMap{
		"t": func(l Lang, key string) string { return T(l, key) },
	}).ParseFS(files, "templates/page.html"))
	inbox = template.Must(template.New("inbox.html").Funcs(template.FuncMap{
		"t": func(l Lang, key string) string { return T(l, key) },
	}).ParseFS(files, "templates/inbox.html"))
}

// LookupAsset returns the embedded static file name, if there is one.
func LookupAsset(name string) (*Asset, bool) {
	a, ok := assets[name]
	return a, ok
}

// AssetNames lists the embedded static files.
func AssetNames() []string {
	names := make([]string, 0, len(assets))
	for n := range assets {
		names = append(names, n)
	}
	return names
}

// PageData is what the shell is rendered from. None of it is secret and
// none of it comes from the session.
type PageData struct {
	Lang  Lang
	Theme string // "dark", "light" or "" (follow the device)
	// SessionID is the id from the path, already checked to be a UUID; ""
	// when the path held something else (the page then shows "not found").
	SessionID string
	// StaticBase is the relative URL of the static files from the page.
	StaticBase string
}

type pageView struct {
	PageData
	L         Lang
	HTMLLang  string
	State     string
	CSS, JS   string
	FormJS    string // form.js, the builders page.js shares with the inbox
	AttachJS  string // attach.js, the attachments page.js shares with the inbox
	JSStrings map[string]string
}

// RenderPage writes the shell.
func RenderPage(w io.Writer, d PageData) error {
	v := pageView{
		PageData:  d,
		L:         d.Lang,
		HTMLLang:  d.Lang.HTMLLang(),
		State:     "loading",
		CSS:       d.StaticBase + "page.css?v=" + assets["page.css"].Version,
		JS:        d.StaticBase + "page.js?v=" + assets["page.js"].Version,
		FormJS:    d.StaticBase + "form.js?v=" + assets["form.js"].Version,
		AttachJS:  d.StaticBase + "attach.js?v=" + assets["attach.js"].Version,
		JSStrings: scriptStrings(d.Lang),
	}
	if d.SessionID == "" {
		v.State = "notfound"
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		return fmt.Errorf("rendering the answer page: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// InboxData is what the inbox shell is rendered from.
type InboxData struct {
	Lang  Lang
	Theme string
	// Person is the signed-in person's display name (or id).
	Person string
	// StaticBase is the relative URL of the static files from the inbox.
	StaticBase string
}

type inboxView struct {
	InboxData
	L                 Lang
	HTMLLang          string
	CSS, InboxCSS, JS string
	FormJS            string // form.js, the builders inbox.js shares with the page
	AttachJS          string // attach.js, the attachments inbox.js shares with the page
	Icon, Icon192     string
	JSStrings         map[string]string
}

// inboxStrings are the inbox script's strings, with the answer page's for
// attachments (attach.js), which both show alike.
func inboxStrings(l Lang) map[string]string {
	out := prefixed(l, "inboxjs.")
	for k, v := range prefixed(l, "js.attach.") {
		out["attach."+k] = v
	}
	for _, k := range []string{"attach.label", "attach.pick", "attach.camera"} {
		out[k] = texts[l][k]
	}
	out["attach.network"] = texts[l]["js.err.network"]
	return out
}

// RenderInbox writes the inbox shell. It carries no question: the script
// fetches them.
func RenderInbox(w io.Writer, d InboxData) error {
	v := inboxView{
		InboxData: d, L: d.Lang, HTMLLang: d.Lang.HTMLLang(),
		CSS:       d.StaticBase + "page.css?v=" + assets["page.css"].Version,
		InboxCSS:  d.StaticBase + "inbox.css?v=" + assets["inbox.css"].Version,
		JS:        d.StaticBase + "inbox.js?v=" + assets["inbox.js"].Version,
		FormJS:    d.StaticBase + "form.js?v=" + assets["form.js"].Version,
		AttachJS:  d.StaticBase + "attach.js?v=" + assets["attach.js"].Version,
		Icon:      d.StaticBase + "icon.svg?v=" + assets["icon.svg"].Version,
		Icon192:   d.StaticBase + "icon-192.png?v=" + assets["icon-192.png"].Version,
		JSStrings: inboxStrings(d.Lang),
	}
	var buf bytes.Buffer
	if err := inbox.Execute(&buf, v); err != nil {
		return fmt.Errorf("rendering the inbox: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
