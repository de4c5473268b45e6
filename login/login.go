// Package login implements the sign-in modes of identity.Login: Caddy's own
// authentication in front of the handler (Caddy) and an OpenID provider
// (OIDC), with server-side sessions in the shared store. It serves the
// sign-in endpoints every mode has:
//
//	GET  /login?back=/path   start signing in, then go back to /path
//	GET  /login/callback     the OpenID provider's redirect (oidc only)
//	POST /logout             end the session (oidc only)
//	GET  /login/whoami       {"id","name"} of the person, or 401
//
// The routes are relative to the module's mount point (the path of
// public_url). A `back` is a path from the site's root, as the browser sees
// it (mount prefix included), as identity.Login.SignIn takes it: the person
// is sent back to public_url's origin + back, never to another origin.
//
// The package does not import Caddy: the root package hands it what it
// needs (who Caddy's authentication said the user is, the store, the URL).
package login

import (
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/pagesec"
)

// Route patterns, relative to the module's mount point.
const (
	PathLogin    = "/login"
	PathCallback = "/login/callback"
	PathLogout   = "/logout"
	PathWhoami   = "/login/whoami"
)

// maxBack bounds a `back` path: a longer one is not a page of this site.
const maxBack = 2048

// SafeBack returns back when it is a path on this site ("/inbox",
// "/authorize?x=y"), and "/" otherwise: an absolute URL, a
// scheme-relative "//host", a backslash (browsers read "/\host" as
// "//host"), control characters or an overlong value could send the
// person to another origin after signing in (an open redirect).
func SafeBack(back string) string {
	if back == "" || len(back) > maxBack || back[0] != '/' {
		return "/"
	}
	if strings.HasPrefix(back, "//") || strings.ContainsRune(back, '\\') ||
		strings.ContainsFunc(back, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar }) {
		return "/"
	}
	u, err := url.Parse(back)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return "/"
	}
	// "/%2F%2Fevil" decodes to "//evil" in the path: harmless for a
	// redirect (the browser keeps the escapes), but refuse it anyway so
	// that no later decoding can turn it into another origin.
	if strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	return back
}

// whoami answers GET /login/whoami for any Login: the person as JSON, or
// 401 when nobody is signed in.
func whoami(l identity.Login) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, http.MethodGet, http.MethodHead)
			return
		}
		p, err := l.Person(r)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, p)
		case errors.Is(err, identity.ErrNotSignedIn):
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not signed in"})
		default:
			// The store could not be read: not the caller's fault.
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "sign-in could not be checked: the session store is unavailable"})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed; use " + strings.Join(allow, " or ")})
}

// signInRoute serves PathLogin (GET or HEAD, ?back=<path>) with signIn.
func signInRoute(signIn func(w http.ResponseWriter, r *http.Request, back string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, http.MethodGet, http.MethodHead)
			return
		}
		signIn(w, r, r.URL.Query().Get("back"))
	})
}

// redirect sends the browser to target (an absolute URL on this site or
// at the provider) with 303, so that a POST is followed by a GET.
func redirect(w http.ResponseWriter, target string) {
	h := w.Header()
	h.Set("Location", target)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusSeeOther)
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}}</title></head>
<body><main><h1>{{.Title}}</h1><p>{{.Message}}</p>{{if .Again}}<p><a href="{{.Again}}">Sign in again</a></p>{{end}}</main></body></html>
`))

// showError answers with a small page that says what went wrong. It loads
// nothing, so the strictest CSP holds, and sends no Referer onwards (the
// callback's URL carries a code and a state).
func showError(w http.ResponseWriter, status int, title, message, again string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	pagesec.Set(h, nil, "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	w.WriteHeader(status)
	_ = errorPage.Execute(w, struct{ Title, Message, Again string }{title, message, again})
}
