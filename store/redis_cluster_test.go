package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// TestRedisClusterContract runs the whole contract suite against a real
// three-master Redis Cluster: each session is one key (one hash slot), and
// a question's sharded channel lives on that slot's node, where its
// SPUBLISH reaches the instances subscribed to it.
func TestRedisClusterContract(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	storetest.Run(t, func(t *testing.T) store.Store {
		st, err := store.NewRedis(store.RedisOptions{URL: cl.URL(), KeyPrefix: "cl:" + storetest.NewID() + ":"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	})
}

// TestRedisClusterCrossInstance: with sessions spread over the cluster's
// slots, of many concurrent submits through two instances exactly one
// wins, and a third instance that only watches hears of it.
func TestRedisClusterCrossInstance(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	open := func() store.Store {
		st, err := store.NewRedis(store.RedisOptions{URL: cl.URL(), KeyPrefix: "x:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	a, b, watcher := open(), open(), open()
	for i := range 10 { // ten ids land in different slots, so on different nodes
		s := storetest.NewSession(time.Minute)
		if err := a.Create(t.Context(), s, time.Hour); err != nil {
			t.Fatalf("Create: %v", err)
		}
		w := watcher.Watch(t.Context(), s.ID) // hears only through pub/sub

		var wins atomic.Int32
		var wg sync.WaitGroup
		for j := range 20 {
			st := a
			if j%2 == 1 {
				st = b
			}
			wg.Go(func() {
				if _, err := st.Submit(t.Context(), s.ID, store.Answer{FreeText: fmt.Sprint("answer ", i, j)}); err == nil {
					wins.Add(1)
				} else if !errors.Is(err, store.ErrConflict) {
					t.Errorf("Submit: %v", err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("session %d: %d winners, want 1", i, wins.Load())
		}
		waitStatus(t, watcher, w, s.ID, store.StatusSubmitted)
	}
}

// TestRedisClusterAnnounceAcross: the same over a three-master Cluster,
// where the topic's channel lives on its slot's node.
func TestRedisClusterAnnounceAcross(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	open := func() *store.Redis {
		st, err := store.NewRedis(store.RedisOptions{URL: cl.URL(), KeyPrefix: "ann:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	a, b := open(), open()
	storetest.AnnounceAcross(t, a, b, func(string) { waitSubscribeCount(t, b, 1) })
}
