package oauth

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for the records' own expiry times (the
// store's TTLs run on real time and are longer than these checks need).
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestExpiry(t *testing.T) {
	clk := &clock{now: time.Now()}
	e := newEnv(t, func(c *Config) { c.Now = clk.Now })
	id := e.newClient(cb)

	code := e.code(id, cb, "alice")
	clk.add(CodeTTL + time.Second)
	if r, tk := e.exchange(id, cb, code); r.status != 400 || tk.Error != "invalid_grant" || !strings.Contains(tk.Desc, "expired") {
		t.Fatalf("a code older than %s: %d %s", CodeTTL, r.status, r.body)
	}

	_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
	clk.add(AccessTTL - time.Second)
	if got := e.check(tk.Access); got != "ok" {
		t.Fatalf("an access token within its hour: %s", got)
	}
	clk.add(2 * time.Second)
	if got := e.check(tk.Access); got != "expired" {
		t.Fatalf("an access token past its hour: %s, want expired", got)
	}
	// The refresh token outlives it.
	if r, tk2 := e.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}}); r.status != 200 || e.check(tk2.Access) != "ok" {
		t.Fatalf("refresh after the access token expired: %d %s", r.status, r.body)
	}
}

// TestRevokeHostile: RFC 7009 answers, and what a revocation must not do.
func TestRevokeHostile(t *testing.T) {
	e := newEnv(t)
	id := e.newClient(cb)
	other := e.newClient(cb)
	_, tk := e.exchange(id, cb, e.code(id, cb, "alice"))
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"no token", url.Values{"client_id": {id}}, 400, "invalid_request"},
		{"no client", url.Values{"token": {tk.Access}}, 401, "invalid_client"},
		{"unknown client", url.Values{"token": {tk.Access}, "client_id": {"dcr_nope"}}, 401, "invalid_client"},
		{"token twice", url.Values{"token": {tk.Access, tk.Refresh}, "client_id": {id}}, 400, "invalid_request"},
		{"huge token", url.Values{"token": {strings.Repeat("x", 10000)}, "client_id": {id}}, 200, ""},
		// Another client's token is left alone (RFC 7009 §2.1) and the
		// answer does not say whether it exists.
		{"another client's token", url.Values{"token": {tk.Access}, "client_id": {other}}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.post("/oauth/revoke", c.form, "")
			if r.status != c.status || (c.code != "" && !strings.Contains(r.body, `"error":"`+c.code+`"`)) {
				t.Fatalf("want %d %s, got %d %s", c.status, c.code, r.status, r.body)
			}
		})
	}
	if e.check(tk.Access) != "ok" {
		t.Fatal("a refused or foreign revocation ended the token")
	}
	t.Run("query parameters refused", func(t *testing.T) {
		r := e.post("/oauth/revoke?token="+url.QueryEscape(tk.Access), url.Values{"client_id": {id}}, "")
		if r.status != 400 || !strings.Contains(r.body, "not the URL") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}
