package store_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

func BenchmarkMemoryCreate(b *testing.B) { benchCreate(b, newBenchMemory(b)) }
func BenchmarkMemoryGet(b *testing.B)    { benchGet(b, newBenchMemory(b)) }
func BenchmarkMemorySubmit(b *testing.B) { benchSubmit(b, newBenchMemory(b)) }

func BenchmarkRedisCreate(b *testing.B) { benchCreate(b, newBenchRedis(b)) }
func BenchmarkRedisGet(b *testing.B)    { benchGet(b, newBenchRedis(b)) }
func BenchmarkRedisSubmit(b *testing.B) { benchSubmit(b, newBenchRedis(b)) }

func newBenchMemory(b *testing.B) store.Store {
	m := store.NewMemory()
	b.Cleanup(func() { _ = m.Close() })
	return m
}

func newBenchRedis(b *testing.B) store.Store {
	// Handlers wait on Redis, not on the CPU: run more of them than cores,
	// so that rueidis pipelines as it would under load.
	b.SetParallelism(8)
	return newRedis(b, redistest.Start(b), uniquePrefix())
}

// sessions makes n distinct pending sessions, outside the timed part.
func sessions(n int) []*store.Session {
	out := make([]*store.Session, n)
	for i := range out {
		out[i] = storetest.NewSession(time.Hour)
	}
	return out
}

func benchCreate(b *testing.B, s store.Store) {
	ss := sessions(b.N)
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sess := ss[next.Add(1)-1]
			if err := s.Create(b.Context(), sess, 2*time.Hour); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchGet(b *testing.B, s store.Store) {
	ss := sessions(100)
	for _, sess := range ss {
		if err := s.Create(b.Context(), sess, 2*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sess := ss[(next.Add(1)-1)%int64(len(ss))]
			if _, err := s.Get(b.Context(), sess.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchSubmit measures the winning submit: every iteration answers its own
// pending session.
func benchSubmit(b *testing.B, s store.Store) {
	ss := sessions(b.N)
	for _, sess := range ss {
		if err := s.Create(b.Context(), sess, 2*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			a := store.Answer{SelectedOptions: []string{"yes"}, FreeText: "ok", Nonce: fmt.Sprint("n", i)}
			if _, err := s.Submit(b.Context(), ss[i].ID, a); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRedisAnnounceAcross is the time from Announce on one instance
// to the wake-up of a watcher of the topic on another (two stores on one
// local redis-server): how long an inbox on instance B waits to hear of a
// question asked on A, before it re-reads its list. A figure, not a test:
//
//	go test -run '^$' -bench RedisAnnounceAcross -benchtime 2000x ./store/
func BenchmarkRedisAnnounceAcross(b *testing.B) {
	srv := redistest.Start(b)
	prefix := "bench" + storetest.NewID()[:8] + ":"
	a, w := newRedis(b, srv, prefix), newRedis(b, srv, prefix)
	topic := "person:" + storetest.NewID()
	ch := w.Watch(b.Context(), topic)
	waitSubscribeCount(b, w, 1)
	drain(ch)
	for b.Loop() {
		if err := a.Announce(b.Context(), topic); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(waitBound):
			b.Fatal("no wake-up")
		}
	}
}
