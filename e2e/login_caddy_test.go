package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestLoginCaddy: `login caddy` on the real binary. The person is whoever
// Caddy's basic_auth or forward_auth authenticated on that very request;
// a header a client forges is believed nowhere: not where forward_auth
// runs (Caddy replaces it) and not where it does not (the module checks).
func TestLoginCaddy(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// The authenticator forward_auth asks: a local server speaking the
	// forward-auth protocol Authelia, Authentik and oauth2-proxy speak
	// (2xx with the user in a response header lets the request through,
	// anything else is the answer).
	authn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer alice-session":
			w.Header().Set("X-Person", "alice")
			w.WriteHeader(http.StatusOK)
		case "Bearer anonymous":
			// Lets the request through without naming anybody.
			w.WriteHeader(http.StatusOK)
		default:
			http.Error(w, "authenticator: who are you?", http.StatusUnauthorized)
		}
	}))
	t.Cleanup(authn.Close)
	authnHost := strings.TrimPrefix(authn.URL, "http://")

	sites := fmt.Sprintf(`
http://127.0.0.1:{HTTP} {
	# basic_auth on the person's paths only; /open/ has no authenticator.
	handle_path /open/* {
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
			public_url http://127.0.0.1:{HTTP}/open
			login caddy
		}
	}
	handle {
		@person path /login /login/*
		basic_auth @person {
			alice %s
		}
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
			public_url http://127.0.0.1:{HTTP}
			login caddy
		}
	}
}
http://localhost:{HTTP} {
	handle_path /open/* {
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
			public_url http://localhost:{HTTP}/open
			login caddy header X-Person
		}
	}
	handle {
		@person path /login /login/*
		forward_auth @person %s {
			uri /check
			copy_headers X-Person
		}
		mcp_feedback {
			jwt_secret {env.JWT_SECRET}
			public_url http://localhost:{HTTP}
			login caddy header X-Person
		}
	}
}
`, hash, authnHost)
	c := startCaddy(t, sites)
	basic := c.HTTP
	fwd := fmt.Sprintf("http://localhost:%d", c.HTTPPort)
	noRedirect := &http.Client{Timeout: c.Client.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for _, tc := range []struct {
		name, url string
		headers   []string
		status    int
		body      string
		location  string
	}{
		{"basic_auth: whoami is the basic-auth user", basic + "/login/whoami", []string{"Authorization", "Basic " + b64("alice:alice-password")}, 200, `"id":"alice"`, ""},
		{"basic_auth: wrong password never reaches the module", basic + "/login/whoami", []string{"Authorization", "Basic " + b64("alice:guess")}, 401, "", ""},
		{"basic_auth: login sends the person back", basic + "/login?back=/inbox", []string{"Authorization", "Basic " + b64("alice:alice-password")}, 303, "", basic + "/inbox"},
		{"basic_auth: login never sends the person off-site", basic + "/login?back=" + url.QueryEscape("//evil.example/"), []string{"Authorization", "Basic " + b64("alice:alice-password")}, 303, "", basic + "/"},
		{"basic_auth: credentials where basic_auth does not run are nobody's", basic + "/open/login/whoami", []string{"Authorization", "Basic " + b64("alice:alice-password")}, 401, "not signed in", ""},
		{"basic_auth: login where basic_auth does not run says so", basic + "/open/login?back=/open/inbox", nil, 403, "did not run", ""},

		{"forward_auth: whoami is the authenticator's user", fwd + "/login/whoami", []string{"Authorization", "Bearer alice-session"}, 200, `"id":"alice"`, ""},
		{"forward_auth: a forged header with the authenticator's user is replaced", fwd + "/login/whoami", []string{"Authorization", "Bearer alice-session", "X-Person", "mallory"}, 200, `"id":"alice"`, ""},
		{"forward_auth: a forged header when the authenticator names nobody is removed", fwd + "/login/whoami", []string{"Authorization", "Bearer anonymous", "X-Person", "mallory"}, 401, "not signed in", ""},
		{"forward_auth: the authenticator's refusal is the answer", fwd + "/login/whoami", []string{"X-Person", "mallory"}, 401, "who are you", ""},
		{"forward_auth: a forged header without the authenticator is refused", fwd + "/open/login/whoami", []string{"X-Person", "mallory"}, 401, "not signed in", ""},
		{"forward_auth: login with a forged header without the authenticator", fwd + "/open/login?back=/open/inbox", []string{"X-Person", "mallory"}, 403, "did not run", ""},
		{"forward_auth: login sends the person back", fwd + "/login?back=/inbox", []string{"Authorization", "Bearer alice-session"}, 303, "", fwd + "/inbox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, noRedirect, "GET", tc.url, "", tc.headers...)
			if r.Status != tc.status || !strings.Contains(r.Body, tc.body) || r.Header.Get("Location") != tc.location {
				t.Fatalf("%d %q Location %q; want %d containing %q, Location %q", r.Status, tail(r.Body, 300), r.Header.Get("Location"), tc.status, tc.body, tc.location)
			}
		})
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
