package oauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestTwoInstancesOneRedis: two servers (two Caddy instances behind a load
// balancer) share a real redis-server. A client registered at one is
// known at the other, a code issued by one is redeemed at the other, a
// token refreshed at one is spent at both, and a revocation at one ends
// the tokens at the other at once.
func TestTwoInstancesOneRedis(t *testing.T) {
	srv := redistest.Start(t)
	open := func() store.KV {
		r, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), KeyPrefix: "oauthtest:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a := newEnv(t, func(c *Config) { c.KV = open() })
	// b has a's issuer: one site, two instances.
	b, err := New(Config{Issuer: a.ts.URL, Login: cookieLogin{}, KV: open()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range b.Routes() {
		mux.Handle(p, h)
	}
	bts := httptest.NewServer(mux)
	t.Cleanup(bts.Close)
	be := &env{t: t, srv: b, ts: bts, client: a.client}

	id := a.newClient(cb)
	code := a.code(id, cb, "alice")

	_, tk := be.exchange(id, cb, code) // redeemed at b
	if tk.Access == "" {
		t.Fatal("no token")
	}
	if _, aerr := b.Check(context.Background(), tk.Access); aerr != nil {
		t.Fatalf("instance b refuses instance a's token: %v", aerr)
	}
	// Refresh at a; the old refresh token reused: family revoked on both.
	_, tk2 := a.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}})
	if tk2.Access == "" {
		t.Fatal("refresh failed")
	}
	if _, aerr := b.Check(context.Background(), tk2.Access); aerr != nil {
		t.Fatalf("b refuses the refreshed token: %v", aerr)
	}
	if r, _ := a.token(url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "refresh_token": {tk.Refresh}}); r.status != 400 {
		t.Fatalf("reuse: %d", r.status)
	}
	if _, aerr := b.Check(context.Background(), tk2.Access); aerr == nil || aerr.Reason != "revoked" {
		t.Fatalf("after reuse at a, b still accepts the family's token: %v", aerr)
	}
	// A fresh grant, revoked at a, refused at b.
	_, tk3 := a.exchange(id, cb, a.code(id, cb, "alice"))
	if r := a.post("/oauth/revoke", url.Values{"client_id": {id}, "token": {tk3.Access}}, ""); r.status != 200 {
		t.Fatalf("revoke: %d", r.status)
	}
	if _, aerr := b.Check(context.Background(), tk3.Access); aerr == nil {
		t.Fatal("b accepts a token revoked at a")
	}
}
