package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// startReplicated starts a primary and one replica and waits until the
// replica has synced.
func startReplicated(t testing.TB) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Start(t)
	host, port, _ := strings.Cut(primary.Addr, ":")
	replica = redistest.Start(t, "--replicaof", host, port)
	admin := adminClient(t, replica)
	ctx, cancel := context.WithTimeout(t.Context(), waitBound)
	defer cancel()
	for {
		info, err := admin.Do(ctx, admin.B().Info().Section("replication").Build()).ToString()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return primary, replica
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replica never synced: %v %q", err, info)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestRedisWaitReplicas: with wait_replicas 1, an answer is confirmed only
// once the replica holds it; when the replica does not answer in time the
// submit fails (503 upstream) although the primary applied it, and the
// retry with the same nonce succeeds once the replica is back.
func TestRedisWaitReplicas(t *testing.T) {
	primary, replica := startReplicated(t)
	prefix := uniquePrefix()
	r, err := store.NewRedis(store.RedisOptions{URL: primary.URL(), KeyPrefix: prefix,
		WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ctx := t.Context()

	s := storetest.NewSession(time.Minute)
	if err := r.Create(ctx, s, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Submit(ctx, s.ID, store.Answer{FreeText: "confirmed", Nonce: "n1"}); err != nil {
		t.Fatalf("submit with a live replica: %v", err)
	}
	// Confirmed means the replica holds it.
	rep := adminClient(t, replica)
	if st, err := rep.Do(ctx, rep.B().Hget().Key(prefix+"s:{"+s.ID+"}").Field("status").Build()).ToString(); err != nil || st != "submitted" {
		t.Fatalf("status on the replica after a confirmed submit: %q, %v", st, err)
	}

	s2 := storetest.NewSession(time.Minute)
	if err := r.Create(ctx, s2, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := replica.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, err = r.Submit(ctx, s2.ID, store.Answer{FreeText: "unconfirmed", Nonce: "n2"})
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "confirmed by 0 of 1") {
		t.Fatalf("submit while the replica hangs: %v, want ErrUnavailable saying 0 of 1 confirmed", err)
	}
	if err := replica.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	got, err := r.Submit(ctx, s2.ID, store.Answer{FreeText: "unconfirmed", Nonce: "n2"})
	if err != nil || got.Result == nil || got.Result.FreeText != "unconfirmed" {
		t.Fatalf("retry with the same nonce: %+v, %v", got, err)
	}
	// A different answer is still a conflict: the first one stands.
	if _, err := r.Submit(ctx, s2.ID, store.Answer{FreeText: "other", Nonce: "n3"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("another answer after the retry: %v, want ErrConflict", err)
	}
}

// BenchmarkRedisSubmitWait: the cost of confirming each answer with one
// replica (WAIT) against not confirming it, on loopback.
func BenchmarkRedisSubmitWait(b *testing.B) {
	primary, _ := startReplicated(b)
	for _, n := range []int{0, 1} {
		b.Run(fmt.Sprintf("wait_replicas=%d", n), func(b *testing.B) {
			r, err := store.NewRedis(store.RedisOptions{URL: primary.URL(), KeyPrefix: uniquePrefix(), WaitReplicas: n, WaitTimeout: 2 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			ids := make([]string, b.N)
			for i := range ids {
				s := storetest.NewSession(time.Minute)
				if err := r.Create(b.Context(), s, time.Hour); err != nil {
					b.Fatal(err)
				}
				ids[i] = s.ID
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := r.Submit(b.Context(), ids[i], store.Answer{FreeText: "x", Nonce: "n"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
