package store_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// TestRedisLeastPrivilegeUser: the whole store contract and the quotas
// run as a Redis user made with the README's `ACL SETUSER mcpfb …` line
// (the least the module needs); outside its key prefix it can do nothing.
func TestRedisLeastPrivilegeUser(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rule []string
	for _, line := range strings.Split(string(readme), "\n") {
		if rest, ok := strings.CutPrefix(line, "ACL SETUSER mcpfb "); ok {
			rule = strings.Fields(strings.Replace(rest, ">PASSWORD", ">s3cret-pw", 1))
		}
	}
	if rule == nil {
		t.Fatal("the README has no `ACL SETUSER mcpfb …` line")
	}
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	if err := admin.Do(t.Context(), admin.B().Arbitrary("ACL", "SETUSER", "mcpfb").Args(rule...).Build()).Error(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	url := "redis://mcpfb:s3cret-pw@" + srv.Addr + "/0"
	open := func(t *testing.T) store.Store {
		r, err := store.NewRedis(store.RedisOptions{URL: url})
		if err != nil {
			t.Fatalf("NewRedis as the limited user: %v", err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	storetest.Run(t, open)

	st := open(t)
	s := storetest.NewSession(time.Minute)
	if err := st.Admit(t.Context(), s.Owner, s.ID, s.ExpiresAt, store.Quota{MaxPending: 5, CreatesPerMinute: 5}); err != nil {
		t.Fatalf("quota as the limited user: %v", err)
	}
	// The user cannot touch other keys.
	if err := admin.Do(t.Context(), admin.B().Set().Key("other:key").Value("x").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	limited := adminClientURL(t, url)
	if err := limited.Do(t.Context(), limited.B().Get().Key("other:key").Build()).Error(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("reading a key outside the prefix: %v, want NOPERM", err)
	}
}

// adminClientURL is a plain client for url.
func adminClientURL(t testing.TB, url string) rueidis.Client {
	t.Helper()
	o, err := rueidis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	o.DisableCache = true
	c, err := rueidis.NewClient(o)
	if err != nil {
		t.Fatalf("client for %s: %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}
