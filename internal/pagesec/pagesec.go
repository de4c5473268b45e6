// Package pagesec holds the response headers every HTML page of the module
// wears (the answer page, the inbox, the OAuth consent and error pages, the
// sign-in error page): a page that shows a secret or asks for a decision
// must not be framed, cached, indexed, sniffed, sent on as a Referer or
// downgraded to plain HTTP. Each page brings its own Content-Security-Policy.
package pagesec

import "net/http"

// Set puts the shared headers and csp on h for a page answering r.
func Set(h http.Header, r *http.Request, csp string) {
	if r != nil && r.TLS != nil {
		// Once on HTTPS, never downgrade.
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Robots-Tag", "noindex, nofollow")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}
