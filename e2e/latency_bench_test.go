package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// BenchmarkSubmitToWatcher measures how long a watcher waits for an
// answer: from just before the submit request is sent to the moment the
// watcher's WebSocket delivers session_status_changed. Each iteration is
// one fresh session with one page-style watcher; p50/p99 are reported.
//
//	go test -run '^$' -bench SubmitToWatcher -benchtime 200x ./e2e/
func BenchmarkSubmitToWatcher(b *testing.B) {
	b.Run("same-instance/memory", func(b *testing.B) {
		c := startCaddy(b, memorySites)
		measureSubmitToWatcher(b, c, c)
	})
	b.Run("same-instance/redis", func(b *testing.B) {
		rs := redistest.Start(b)
		c := startCaddy(b, redisSites(rs.URL()))
		measureSubmitToWatcher(b, c, c)
	})
	b.Run("cross-instance/redis", func(b *testing.B) {
		rs := redistest.Start(b)
		submitter := startCaddy(b, redisSites(rs.URL()))
		watcher := startCaddy(b, redisSites(rs.URL()))
		measureSubmitToWatcher(b, submitter, watcher)
	})
}

func measureSubmitToWatcher(b *testing.B, submitter, watcher *Caddy) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A subject per iteration: the per-subject create quota is not
		// what is measured.
		cr, capTok := createSession(b, submitter.Client, submitter.HTTP, token(b, fmt.Sprintf("bench-%d", i)), `{"message":"bench"}`)
		conn := watchAsPage(b, watcher, watcher.HTTP, cr.SessionID, capTok)
		got := make(chan time.Time, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, _, err := conn.Read(ctx); err == nil {
				got <- time.Now()
			}
			close(got)
		}()
		b.StartTimer()
		start := time.Now()
		r := do(b, submitter.Client, "POST", submitter.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"x"}`, "X-Feedback-Token", capTok)
		at, ok := <-got
		b.StopTimer()
		if r.Status != 200 || !ok {
			b.Fatalf("submit %d %s, event received %v", r.Status, r.Body, ok)
		}
		lat = append(lat, at.Sub(start))
		conn.Close(websocket.StatusNormalClosure, "")
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d samples: p50 %s ms, p99 %s ms, max %s", len(lat), fmt.Sprint(pct(0.5)), fmt.Sprint(pct(0.99)), lat[len(lat)-1])
}
