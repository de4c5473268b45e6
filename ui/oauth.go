package ui

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"time"
)

// The authorization server's pages (package oauth): the consent page, the
// list of allowed clients, and an error page for requests that cannot be
// sent back to a client. They wear the answer page's look (page.css, the
// same languages and themes) and carry no script.

// OAuthClient is one allowed client on the consents page.
type OAuthClient struct {
	ID, Name string
	Scopes   []string
	Granted  time.Time
}

// OAuthPage is what the pages are rendered from. Everything in it is
// escaped by html/template; client names come from strangers.
type OAuthPage struct {
	Lang       Lang
	Theme      string
	StaticBase string
	// Mode is "consent", "consents" or "error".
	Mode string
	// Detail is the error page's explanation (English; it is technical).
	Detail string
	// Consent: who is asked, about which client, where it goes back to,
	// and what it may do.
	Person       string
	ClientName   string
	ClientHost   string // the host of a metadata-document client_id; "" for a registered one
	RedirectHost string
	Scopes       []string
	CSRF         string
	Action       string
	Clients      []OAuthClient
}

type oauthView struct {
	OAuthPage
	L        Lang
	HTMLLang string
	CSS      string
}

var oauthPage = template.Must(template.New("oauth.html").Funcs(template.FuncMap{
	"t": func(l Lang, key string) string { return T(l, key) },
	"scope": func(l Lang, s string) string {
		if v, ok := texts[l]["oauth.scope."+s]; ok {
			return v
		}
		return s
	},
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
}).ParseFS(files, "templates/oauth.html"))

// RenderOAuth writes one of the authorization server's pages.
func RenderOAuth(w io.Writer, d OAuthPage) error {
	v := oauthView{OAuthPage: d, L: d.Lang, HTMLLang: d.Lang.HTMLLang(),
		CSS: d.StaticBase + "page.css?v=" + assets["page.css"].Version}
	var buf bytes.Buffer
	if err := oauthPage.Execute(&buf, v); err != nil {
		return fmt.Errorf("rendering the %s page: %w", d.Mode, err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
