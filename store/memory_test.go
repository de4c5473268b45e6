package store_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

func TestMemoryContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		m := store.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return m
	})
}

// BenchmarkMemoryFootprint measures the heap a stored session takes in the
// memory store (go test -run X -bench MemoryFootprint ./store/): "pending" is
// a question like storetest.NewSession's (31-character message, three short
// options, small metadata); "answered" is the same with a 200-character
// answer; "largest" is everything at its limit, in 4-byte characters
// (1000-character message, 10 options of 100, 2 KiB metadata, 10000
// characters of free text).
func BenchmarkMemoryFootprint(b *testing.B) {
	const n = 20_000
	wide := func(k int) string { return strings.Repeat("\U0001F600", k) }
	for _, tc := range []struct {
		name   string
		edit   func(*store.Session)
		answer *store.Answer
	}{
		{name: "pending"},
		{name: "answered", answer: &store.Answer{SelectedOptions: []string{"yes"}, FreeText: strings.Repeat("x", 200), Nonce: "n-1", Via: "link"}},
		{name: "largest", edit: func(s *store.Session) {
			s.Message = wide(1000)
			s.PredefinedOptions = make([]string, 10)
			for i := range s.PredefinedOptions {
				s.PredefinedOptions[i] = fmt.Sprint(i) + wide(99)
			}
			s.Metadata = []byte(`{"k":"` + strings.Repeat("m", 2040) + `"}`)
		}, answer: &store.Answer{SelectedOptions: []string{"0" + wide(99)}, FreeText: wide(10000), Nonce: strings.Repeat("n", 128), Via: "link"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var perSession float64
			for b.Loop() {
				m := store.NewMemoryWith(store.MemoryOptions{MaxSessions: n})
				before := heapAfterGC()
				for range n {
					s := storetest.NewSession(time.Hour)
					s.ID = uuid.NewString() // the handlers' ids
					if tc.edit != nil {
						tc.edit(s)
					}
					if err := m.Create(b.Context(), s, 2*time.Hour); err != nil {
						b.Fatal(err)
					}
					if tc.answer != nil {
						a := *tc.answer // as decoded from a request: its own strings
						a.FreeText, a.Nonce = strings.Clone(a.FreeText), strings.Clone(a.Nonce)
						a.SelectedOptions = []string{strings.Clone(a.SelectedOptions[0])}
						if _, err := m.Submit(b.Context(), s.ID, a); err != nil {
							b.Fatal(err)
						}
					}
				}
				perSession = float64(heapAfterGC()-before) / n
				_ = m.Close()
			}
			b.ReportMetric(perSession, "B/session")
		})
	}
}

func heapAfterGC() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestMemoryAnnounceAcross: one process is every instance there is.
func TestMemoryAnnounceAcross(t *testing.T) {
	m := store.NewMemory()
	t.Cleanup(func() { _ = m.Close() })
	storetest.AnnounceAcross(t, m, m, nil)
}
