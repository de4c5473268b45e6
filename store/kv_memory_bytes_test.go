package store

import (
	"errors"
	"testing"
	"time"
)

// TestMemoryKVByteCap: the values a memory store keeps beside its
// sessions (a question's images) are capped in bytes, not only in count:
// past the cap a write fails as "full" (503 with Retry-After upstream), and
// a delete, a take, a replacement or an expiry gives the room back.
func TestMemoryKVByteCap(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := newMemory(func() time.Time { return now }, time.Hour)
	t.Cleanup(func() { _ = m.Close() })
	m.maxBytes = 100
	ctx := t.Context()
	v := func(n int) []byte { return make([]byte, n) }
	full := func(what string, err error) {
		t.Helper()
		var fe *FullError
		if !errors.Is(err, ErrFull) || !errors.As(err, &fe) || fe.RetryAfter <= 0 || fe.MaxBytes != 100 {
			t.Fatalf("%s: %v, want a FullError", what, err)
		}
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := m.Put(ctx, k, v(30), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	full("a 4th value over the cap", m.Put(ctx, "d", v(11), time.Minute))
	if _, err := m.PutNew(ctx, "d", v(11), time.Minute); err == nil {
		t.Fatal("PutNew over the cap succeeded")
	}
	if err := m.Put(ctx, "d", v(10), time.Minute); err != nil {
		t.Fatalf("a value that fits exactly: %v", err)
	}
	// Replacing counts the difference.
	if err := m.Put(ctx, "a", v(30), time.Minute); err != nil {
		t.Fatalf("replacing with as many bytes: %v", err)
	}
	full("growing a value over the cap", m.Put(ctx, "a", v(31), time.Minute))
	if err := m.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Take(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, "e", v(60), time.Minute); err != nil {
		t.Fatalf("after a delete and a take: %v", err)
	}
	// Expired values give their room back, read or swept.
	if err := m.Put(ctx, "short", v(0), time.Second); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	m.sweepKV()
	if m.bytes != 0 || m.count != 0 {
		t.Fatalf("after expiry: %d bytes, %d records", m.bytes, m.count)
	}
	if err := m.Put(ctx, "f", v(100), time.Minute); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

// TestMemoryKVBytesAfterExpiry: replacing an expired value counts only the
// new one (the expired one was already taken off when it was dropped).
func TestMemoryKVBytesAfterExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := newMemKV(func() time.Time { return now })
	ctx := t.Context()
	if err := k.Put(ctx, "a", make([]byte, 100), time.Second); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	if err := k.Put(ctx, "a", make([]byte, 10), time.Second); err != nil {
		t.Fatal(err)
	}
	if k.bytes != 10 || k.count != 1 {
		t.Fatalf("after replacing an expired value: %d bytes, %d records; want 10, 1", k.bytes, k.count)
	}
}
