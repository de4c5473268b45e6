package mcpfeedback

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestRedisStoreTLSAndWaitOptions: the TLS and WAIT options parse, and
// every bad value is refused with a message that names what was wrong.
func TestRedisStoreTLSAndWaitOptions(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ok RedisStore
	d := caddyfile.NewTestDispenser("redis rediss://127.0.0.1:7000 {\n wait_replicas 1\n wait_timeout 250ms\n}")
	if err := ok.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if ok.WaitReplicas != 1 || ok.WaitTimeout != caddy.Duration(250*time.Millisecond) {
		t.Fatalf("parsed %+v", ok)
	}
	for _, tc := range []struct{ caddyfile, want string }{
		{"redis redis://h:1 {\n wait_replicas -1\n}", "wait_replicas"},
		{"redis redis://h:1 {\n wait_replicas two\n}", "wait_replicas"},
		{"redis redis://h:1 {\n wait_replicas\n}", "argument"},
		{"redis redis://h:1 {\n wait_timeout 0s\n}", "wait_timeout"},
		{"redis redis://h:1 {\n wait_timeout soon\n}", "wait_timeout"},
		{"redis redis://h:1 {\n tls_ca_file\n}", "argument"},
		{"redis redis://h:1 {\n tls_ca_file a b\n}", "argument"},
	} {
		var r RedisStore
		err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.caddyfile))
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
			t.Errorf("%q: %v, want an error about %s", tc.caddyfile, err, tc.want)
		}
	}
	for _, tc := range []struct {
		r    RedisStore
		want string
	}{
		{RedisStore{URL: "redis://h:1", TLSCAFile: notPEM}, "rediss://"},
		{RedisStore{URL: "rediss://h:1", TLSCAFile: filepath.Join(dir, "missing.pem")}, "no such file"},
		{RedisStore{URL: "rediss://h:1", TLSCAFile: notPEM}, "no PEM certificate"},
		{RedisStore{URL: "redis://h:1", WaitReplicas: -2}, "wait_replicas"},
	} {
		if err := tc.r.Provision(caddy.Context{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.r, err, tc.want)
		}
	}
}
