// Package identity says who the person in front of a browser is. A Login
// is one configured way of signing in: Caddy's own authentication in front
// of the handler (`login caddy`) or an OpenID provider (`login oidc`). The
// authorization server (package oauth), the inbox and push build on it;
// none of them cares which Login it is.
package identity

import (
	"context"
	"errors"
	"net/http"
)

// Person is a signed-in person. ID is the subject that owns questions: a
// question an agent asks with a token whose `sub` is "alice" is alice's,
// and the person who signs in as "alice" sees it.
type Person struct {
	ID string `json:"id"`
	// Name is for display (a consent page, an inbox header); may be empty.
	Name string `json:"name,omitempty"`
}

// ErrNotSignedIn is returned by Login.Person when the request carries no
// (valid, unexpired) sign-in.
var ErrNotSignedIn = errors.New("identity: not signed in")

// Login is a configured sign-in.
type Login interface {
	// Person returns the person signed in on r, ErrNotSignedIn, or another
	// error when the sign-in could not be checked (the store is down).
	Person(r *http.Request) (Person, error)
	// SignIn answers r by starting a sign-in (a redirect to the provider,
	// or an error page when sign-in is Caddy's and it did not run). After
	// it the browser comes back to back, a path on this site beginning
	// with "/" (never another origin).
	SignIn(w http.ResponseWriter, r *http.Request, back string)
	// Routes are the endpoints this login serves (callback, logout),
	// keyed by ServeMux pattern relative to the module's mount point.
	Routes() map[string]http.Handler
	// Close stops background work (key refreshes).
	Close(ctx context.Context) error
}
