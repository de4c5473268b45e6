package login

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSafeBack(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/inbox", "/inbox"},
		{"/oauth/authorize?client_id=x&state=y", "/oauth/authorize?client_id=x&state=y"},
		{"/fb/inbox#top", "/fb/inbox#top"},
		{"", "/"},
		{"inbox", "/"},
		{"https://evil.example/", "/"},
		{"//evil.example", "/"},
		{"///evil.example", "/"},
		{"/\\evil.example", "/"},
		{"\\\\evil.example", "/"},
		{"/%2F%2Fevil.example", "/"},
		{"/%2fevil.example", "/"}, // "//evil.example" once decoded
		{"/a/%2f%2fevil", "/a/%2f%2fevil"},
		{"/\tevil", "/"},
		{"/ /evil", "/"},
		{"/\x00", "/"},
		{"/\r\nSet-Cookie: x=y", "/"},
		{"javascript:alert(1)", "/"},
		{"/" + strings.Repeat("a", maxBack), "/"},
		{"/%zz", "/"},
	} {
		if got := SafeBack(tc.in); got != tc.want {
			t.Errorf("SafeBack(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// caddyLogin is `login caddy` whose authenticator put the user in the
// test header X-Test-User (the root package reads Caddy's placeholder).
func caddyLogin(t *testing.T) *Caddy {
	t.Helper()
	c, err := NewCaddy(CaddyOptions{User: func(r *http.Request) string { return r.Header.Get("X-Test-User") }, Origin: "https://fb.example"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCaddyLogin(t *testing.T) {
	c := caddyLogin(t)
	routes := c.Routes()
	for _, tc := range []struct {
		name, method, target, user string
		status                     int
		body, location             string
	}{
		{"whoami signed in", "GET", "/login/whoami", "alice", 200, `{"id":"alice","name":"alice"}`, ""},
		{"whoami nobody", "GET", "/login/whoami", "", 401, `"not signed in"`, ""},
		{"whoami control character", "GET", "/login/whoami", "al\x01ice", 401, `"not signed in"`, ""},
		{"whoami space", "GET", "/login/whoami", "alice bob", 401, `"not signed in"`, ""},
		{"whoami overlong", "GET", "/login/whoami", strings.Repeat("a", maxID+1), 401, `"not signed in"`, ""},
		{"whoami POST", "POST", "/login/whoami", "alice", 405, "use GET", ""},
		{"login sends back", "GET", "/login?back=/inbox", "alice", 303, "", "https://fb.example/inbox"},
		{"login off-site back", "GET", "/login?back=//evil.example", "alice", 303, "", "https://fb.example/"},
		{"login backslash back", "GET", "/login?back=/%5Cevil.example", "alice", 303, "", "https://fb.example/"},
		{"login absolute back", "GET", "/login?back=https://evil.example/", "alice", 303, "", "https://fb.example/"},
		{"login without authenticator", "GET", "/login?back=/inbox", "", 403, "did not run", ""},
		{"login POST", "POST", "/login", "alice", 405, "use GET", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _, _ := strings.Cut(tc.target, "?")
			h, ok := routes[path]
			if !ok {
				t.Fatalf("no route %s", path)
			}
			r := httptest.NewRequest(tc.method, tc.target, nil)
			if tc.user != "" {
				r.Header.Set("X-Test-User", tc.user)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.body) || w.Header().Get("Location") != tc.location {
				t.Fatalf("%d %q Location %q; want %d containing %q, Location %q", w.Code, w.Body, w.Header().Get("Location"), tc.status, tc.body, tc.location)
			}
		})
	}
	if _, ok := routes[PathLogout]; ok {
		t.Error("login caddy serves /logout, but signing out is the authenticator's")
	}
}
