package mcpfeedback

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestRedisStoreAddresses(t *testing.T) {
	var r RedisStore
	d := caddyfile.NewTestDispenser("redis redis://:pw@127.0.0.1:7000/0 127.0.0.1:7001 127.0.0.1:7002 {\n key_prefix c:\n}")
	if err := r.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if err := r.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.resolved, "addr=127.0.0.1%3A7001&addr=127.0.0.1%3A7002") || r.KeyPrefix != "c:" {
		t.Fatalf("resolved %q prefix %q", r.resolved, r.KeyPrefix)
	}
	bad := RedisStore{URL: "redis://127.0.0.1:7000", Addresses: []string{"no-port"}}
	if err := bad.Provision(caddy.Context{}); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("bad address accepted: %v", err)
	}
	secret := RedisStore{URL: "http://user:hunter2@x"}
	if err := secret.Provision(caddy.Context{}); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v leaks the password or accepts the scheme", err)
	}
}

func TestRedisStoreUnknownOptionAfterKnown(t *testing.T) {
	var r RedisStore
	d := caddyfile.NewTestDispenser("redis redis://127.0.0.1:7000 {\n key_prefix c:\n pool_size 3\n}")
	if err := r.UnmarshalCaddyfile(d); err == nil || !strings.Contains(err.Error(), "pool_size") {
		t.Fatalf("unknown option after key_prefix: %v", err)
	}
}
