package storetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// runKV is the KV part of the contract.
func runKV(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("KVPutLoadDelete", func(t *testing.T) { testKVPutLoad(t, newStore(t)) })
	t.Run("KVPutNew", func(t *testing.T) { testKVPutNew(t, newStore(t)) })
	t.Run("KVTakeOnce", func(t *testing.T) { testKVTakeOnce(t, newStore(t)) })
	t.Run("KVTTL", func(t *testing.T) { testKVTTL(t, newStore(t)) })
	t.Run("KVMembers", func(t *testing.T) { testKVMembers(t, newStore(t)) })
	t.Run("KVBadArguments", func(t *testing.T) { testKVBadArguments(t, newStore(t)) })
}

func testKVPutLoad(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := "test:" + NewID()
	if _, err := s.Load(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load of nothing: %v, want ErrNotFound", err)
	}
	val := []byte("a\x00binary\xffvalue")
	if err := s.Put(ctx, key, val, longTTL); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, key)
	if err != nil || !bytes.Equal(got, val) {
		t.Fatalf("Load = %q, %v; want %q", got, err, val)
	}
	got[0] = 'X' // the caller's copy
	if again, _ := s.Load(ctx, key); !bytes.Equal(again, val) {
		t.Fatalf("Load after changing the returned slice = %q", again)
	}
	if err := s.Put(ctx, key, []byte("second"), longTTL); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, key); string(got) != "second" {
		t.Fatalf("Put did not replace: %q", got)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("deleting nothing: %v", err)
	}
	if _, err := s.Load(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load after Delete: %v", err)
	}
}

func testKVPutNew(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := "test:" + NewID()
	ok, err := s.PutNew(ctx, key, []byte("first"), longTTL)
	if err != nil || !ok {
		t.Fatalf("PutNew on nothing = %v, %v", ok, err)
	}
	ok, err = s.PutNew(ctx, key, []byte("second"), longTTL)
	if err != nil || ok {
		t.Fatalf("PutNew on a taken key = %v, %v; want false", ok, err)
	}
	if got, _ := s.Load(ctx, key); string(got) != "first" {
		t.Fatalf("PutNew replaced the value: %q", got)
	}
}

func testKVTakeOnce(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := "test:" + NewID()
	if err := s.Put(ctx, key, []byte("code"), longTTL); err != nil {
		t.Fatal(err)
	}
	const takers = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won int
	for range takers {
		wg.Go(func() {
			v, err := s.Take(ctx, key)
			switch {
			case err == nil && string(v) == "code":
				mu.Lock()
				won++
				mu.Unlock()
			case errors.Is(err, store.ErrNotFound):
			default:
				t.Errorf("Take = %q, %v", v, err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of %d concurrent Takes got the value, want exactly 1", won, takers)
	}
	if _, err := s.Load(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load after Take: %v", err)
	}
}

func testKVTTL(t *testing.T, s store.Store) {
	ctx := t.Context()
	key, set := "test:"+NewID(), "test:set:"+NewID()
	if err := s.Put(ctx, key, []byte("v"), 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, set, "short", time.Now().Add(150*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, set, "long", time.Now().Add(longTTL)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the value and the short member to expire", func() bool {
		_, err := s.Load(ctx, key)
		m, merr := s.Members(ctx, set)
		if merr != nil {
			t.Fatal(merr)
		}
		return errors.Is(err, store.ErrNotFound) && slices.Equal(m, []string{"long"})
	})
	// An expired key is free for PutNew again.
	if ok, err := s.PutNew(ctx, key, []byte("again"), longTTL); err != nil || !ok {
		t.Fatalf("PutNew after expiry = %v, %v", ok, err)
	}
}

func testKVMembers(t *testing.T, s store.Store) {
	ctx := t.Context()
	set := "test:set:" + NewID()
	if m, err := s.Members(ctx, set); err != nil || len(m) != 0 {
		t.Fatalf("Members of nothing = %v, %v", m, err)
	}
	until := time.Now().Add(longTTL)
	for _, m := range []string{"b", "a", "c", "a"} {
		if err := s.AddMember(ctx, set, m, until); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveMember(ctx, set, "c"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMember(ctx, set, "never"); err != nil {
		t.Fatalf("removing a stranger: %v", err)
	}
	got, err := s.Members(ctx, set)
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Members = %v, %v; want [a b]", got, err)
	}
	// A member whose time is already past is not listed.
	if err := s.AddMember(ctx, set, "a", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Members(ctx, set); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("Members after moving a into the past = %v", got)
	}
}

func testKVBadArguments(t *testing.T, s store.Store) {
	ctx := t.Context()
	big := make([]byte, store.MaxKVValue+1)
	for name, err := range map[string]error{
		"empty key":      s.Put(ctx, "", []byte("v"), longTTL),
		"key with space": s.Put(ctx, "a b", []byte("v"), longTTL),
		"long key":       s.Delete(ctx, string(make([]byte, store.MaxKVKey+1))),
		"big value":      s.Put(ctx, "test:big", big, longTTL),
		"zero ttl":       s.Put(ctx, "test:zero", []byte("v"), 0),
		"empty member":   s.AddMember(ctx, "test:set", "", time.Now().Add(time.Minute)),
	} {
		if !errors.Is(err, store.ErrKVArgument) {
			t.Errorf("%s: %v, want ErrKVArgument", name, err)
		}
	}
}

// waitFor polls cond every 25 ms until it holds, failing after waitBound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitBound)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", waitBound, what)
		case <-tick.C:
		}
	}
}
