package login

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"unicode"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
)

// CaddyOptions configure `login caddy`.
type CaddyOptions struct {
	// User returns who Caddy's authentication in front of the handler
	// said the user is, or "" when it did not run or let nobody in. The
	// root package reads {http.auth.user.id}, or a header that
	// forward_auth copied, but only on a request forward_auth answered.
	User func(*http.Request) string
	// Origin is public_url's scheme://host[:port]: where `back` paths lead.
	Origin string
}

// Caddy is `login caddy`: the person is whoever Caddy's basic_auth or
// forward_auth authenticated on this very request. It keeps no session of
// its own (the authenticator has one, or basic auth sends the password
// each time), so sign-out is the authenticator's.
type Caddy struct {
	user   func(*http.Request) string
	origin string
}

// NewCaddy returns the `login caddy` Login.
func NewCaddy(o CaddyOptions) (*Caddy, error) {
	if o.User == nil {
		return nil, errors.New("login caddy: no way to read the authenticated user")
	}
	if o.Origin == "" {
		return nil, errors.New("login caddy: public_url is required")
	}
	return &Caddy{user: o.User, origin: strings.TrimRight(o.Origin, "/")}, nil
}

// maxID bounds a person id: longer ones are not names an authenticator
// gives, and ids end up in store keys.
const maxID = 256

// validID reports whether id can name a person: not empty, not overlong,
// no control characters or spaces (a header's value could carry them).
func validID(id string) bool {
	return id != "" && len(id) <= maxID && !strings.ContainsFunc(id, func(r rune) bool {
		return unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar
	})
}

// Person implements identity.Login.
func (c *Caddy) Person(r *http.Request) (identity.Person, error) {
	id := c.user(r)
	if !validID(id) {
		return identity.Person{}, identity.ErrNotSignedIn
	}
	return identity.Person{ID: id, Name: id}, nil
}

// SignIn implements identity.Login. Signing in is the authenticator's
// job; when the person is known it sends them back, and when Caddy's
// authentication did not run on this route it says so instead of
// trusting anything the request carries.
func (c *Caddy) SignIn(w http.ResponseWriter, r *http.Request, back string) {
	if _, err := c.Person(r); err == nil {
		redirect(w, c.origin+SafeBack(back))
		return
	}
	showError(w, http.StatusForbidden, "Not signed in",
		"This site signs people in with Caddy's own authentication (basic_auth or forward_auth in front of mcp_feedback), and it did not run for this request, so nobody is signed in. The site's operator must put it on every route that reaches mcp_feedback.", "")
}

// Routes implements identity.Login.
func (c *Caddy) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		PathLogin:  signInRoute(c.SignIn),
		PathWhoami: whoami(c),
	}
}

// Close implements identity.Login; there is nothing to stop.
func (c *Caddy) Close(context.Context) error { return nil }

var _ identity.Login = (*Caddy)(nil)
