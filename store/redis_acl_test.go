package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// aclRule is the least-privilege Redis ACL user the module needs, for the
// default key prefix mcpfb: (the README quotes this line; replace both
// mcpfb: with your key_prefix). Every command is one the store or its Lua
// scripts run; keys and channels are limited to the prefix.
const aclRule = "on >CHANGE-ME resetkeys ~mcpfb:* resetchannels &mcpfb:events -@all " +
	"+hello +auth +ping +client|setname +select " +
	"+evalsha +eval +script|load +subscribe +unsubscribe " +
	"+hget +hgetall +hset +exists +pexpire +pttl +publish +time +zadd +zcard +zrange +zrem +zremrangebyscore"

// TestRedisLeastPrivilegeUser: the whole store contract and the quotas
// run as a Redis user limited to aclRule; outside its key prefix it can do
// nothing.
func TestRedisLeastPrivilegeUser(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	rule := strings.Replace(aclRule, ">CHANGE-ME", ">s3cret-pw", 1)
	if err := admin.Do(t.Context(), admin.B().Arbitrary("ACL", "SETUSER", "mcpfb").Args(strings.Fields(rule)...).Build()).Error(); err != nil {
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
