package handlers

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The handler benchmarks measure create, submit and status through the
// HTTP handlers (decoding, validation, auth, store) on both stores.
// Run: go test -run '^$' -bench . -benchmem ./handlers/

func benchStores(b *testing.B, fn func(b *testing.B, s *Service)) {
	b.Run("memory", func(b *testing.B) {
		// No cap: a benchmark makes more sessions than the default holds.
		st := store.NewMemoryWith(store.MemoryOptions{MaxSessions: -1})
		defer st.Close()
		fn(b, newService(b, st))
	})
	b.Run("redis", func(b *testing.B) {
		rs := redistest.Start(b)
		st, err := store.NewRedis(store.RedisOptions{URL: rs.URL(), KeyPrefix: "bench:"})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		fn(b, newService(b, st))
	})
}

func BenchmarkCreate(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Service) {
		h := bearer(mint(b, "alice"))
		body := `{"message":"Deploy to production?","predefinedOptions":["yes","no","later"],"timeout":300,"metadata":{"pr":42}}`
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if w := s.do(b, s.Create, call{method: "POST", body: body, headers: h}); w.Code != http.StatusCreated {
					b.Fatalf("create: %d %s", w.Code, w.Body)
				}
			}
		})
	})
}

func BenchmarkStatus(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Service) {
		tok := mint(b, "alice")
		id, _ := create(b, s, tok, `{"message":"Q"}`)
		h := bearer(tok)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if w := s.do(b, s.Status, call{method: "GET", id: id, headers: h}); w.Code != http.StatusOK {
					b.Fatalf("status: %d %s", w.Code, w.Body)
				}
			}
		})
	})
}

func BenchmarkSubmit(b *testing.B) {
	benchStores(b, func(b *testing.B, s *Service) {
		tok := mint(b, "alice")
		// Sessions are made before the timer starts; each iteration answers one.
		ids, caps := make([]string, b.N), make([]string, b.N)
		for i := range ids {
			ids[i], caps[i] = create(b, s, tok, `{"message":"Q","predefinedOptions":["a","b"]}`)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range ids {
			req := httptest.NewRequest("POST", "/api/feedback/x/submit", strings.NewReader(fmt.Sprintf(`{"selectedOptions":["a"],"nonce":"n%d"}`, i)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Feedback-Token", caps[i])
			req.SetPathValue("id", ids[i])
			w := httptest.NewRecorder()
			s.Submit(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("submit: %d %s", w.Code, w.Body)
			}
		}
	})
}
