package handlers

import (
	"net/http"
	"strings"
)

// Methods serves h for the listed methods and answers 405 with an Allow
// header otherwise, so that a known path with the wrong method is not
// mistaken for an unknown one.
func Methods(h http.HandlerFunc, methods ...string) http.Handler {
	allow := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				h(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+allow+" for this endpoint")
	})
}

// UnknownEndpoint answers paths under the API prefix that match no endpoint.
func UnknownEndpoint(w http.ResponseWriter, _ *http.Request) {
	WriteError(w, http.StatusNotFound, "not_found", "no such endpoint or session")
}
