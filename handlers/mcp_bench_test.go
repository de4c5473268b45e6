package handlers

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The MCP benchmarks. Run:
//
//	go test -run '^$' -bench MCP -benchtime 200x ./handlers/
//
// BenchmarkMCPAnswerLatency: an agent waits in get_feedback_result over
// /mcp (Streamable HTTP); the person submits through the REST API; the
// metric is the time from the submit request to the agent holding the
// result (p50/p99 over b.N answers), on both stores.
// BenchmarkMCPIdleSession: what one idle MCP session costs, as heap and
// goroutines, counting both ends of its connection (server and client run
// in this process).

func benchMCPStores(b *testing.B, fn func(b *testing.B, st store.Store)) {
	b.Run("memory", func(b *testing.B) { fn(b, store.NewMemory()) })
	b.Run("redis", func(b *testing.B) {
		rs := redistest.Start(b)
		st, err := store.NewRedis(store.RedisOptions{URL: rs.URL(), KeyPrefix: "mcpbench:"})
		if err != nil {
			b.Fatal(err)
		}
		fn(b, st)
	})
}

// progressRouter hands each call's first progress notification to the
// goroutine waiting for that call.
type progressRouter struct {
	mu   sync.Mutex
	subs map[string]chan struct{}
}

func routeProgress(c *client.Client) *progressRouter {
	r := &progressRouter{subs: map[string]chan struct{}{}}
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		tok := fmt.Sprint(n.Params.AdditionalFields["progressToken"])
		r.mu.Lock()
		ch := r.subs[tok]
		delete(r.subs, tok)
		r.mu.Unlock()
		if ch != nil {
			close(ch)
		}
	})
	return r
}

func (r *progressRouter) expect(tok string) <-chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	r.subs[tok] = ch
	r.mu.Unlock()
	return ch
}

func BenchmarkMCPAnswerLatency(b *testing.B) {
	benchMCPStores(b, func(b *testing.B, st store.Store) {
		e := newMCPEnv(b, st)
		tok := mint(b, "alice")
		c := e.connect("http", tok)
		router := routeProgress(c)
		claims := &auth.Claims{}
		claims.Subject = "alice"
		owner := OwnerOf(claims)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			created, err := e.svc.Core().Ask(context.Background(), owner, &validate.CreateRequest{Message: "Q", Timeout: 5 * time.Minute, AllowFreeText: true}, e.srv.URL, feedback.Style{})
			if err != nil {
				b.Fatal(err)
			}
			ptok := fmt.Sprint("b", i)
			waiting := router.expect(ptok)
			done := make(chan *mcp.CallToolResult, 1)
			go func() {
				r, err := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: ToolGetFeedbackResult,
					Arguments: map[string]any{"sessionId": created.Session.ID, "wait": 300}, Meta: &mcp.Meta{ProgressToken: ptok}}})
				if err != nil {
					b.Error(err)
				}
				done <- r
			}()
			<-waiting // the server has subscribed and is waiting
			t0 := time.Now()
			e.submit(created.Link, `{"freeText":"ok"}`)
			r := <-done
			lat = append(lat, time.Since(t0))
			if r == nil || r.IsError {
				b.Fatalf("result %+v", r)
			}
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
	})
}

// maxHeld bounds the sessions held open at once (two file descriptors
// each in this process); iterations past it open and close a session.
const maxHeld = 1000

func BenchmarkMCPIdleSession(b *testing.B) {
	for _, kind := range []string{"streamable", "sse"} {
		b.Run(kind, func(b *testing.B) {
			// The per-subject session cap is lifted: one token holds them all.
			e := newMCPEnv(b, store.NewMemory(), func(_ *MCPOptions, mc *MCPConfig, _ *validate.Limits) { mc.MaxSessionsPerSubject = 1 << 20 })
			tok := mint(b, "alice")
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1 << 16}}
			ctx, cancel := context.WithCancel(context.Background())
			b.Cleanup(cancel)
			// open starts one idle session the way the TS SDK holds one and
			// returns what ends it.
			open := func() func() {
				req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/sse", nil)
				if kind == "streamable" {
					// initialize, then the GET stream for server messages.
					r := e.rawSession(tok)
					req, _ = http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/mcp", nil)
					req.Header.Set("Accept", "text/event-stream")
					req.Header.Set("Mcp-Session-Id", r.session)
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := hc.Do(req)
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("%s stream: %v %v", kind, err, resp)
				}
				if kind == "sse" {
					// The endpoint event: the session is registered.
					br := bufio.NewReader(resp.Body)
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							b.Fatal(err)
						}
						if strings.HasPrefix(line, "data:") {
							break
						}
					}
				}
				return func() { resp.Body.Close() }
			}
			n := min(b.N, maxHeld)
			var held []func()
			defer func() {
				for _, f := range held {
					f()
				}
				hc.CloseIdleConnections()
			}()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			g0 := runtime.NumGoroutine()
			b.ResetTimer()
			for i := range b.N {
				end := open()
				if i >= n {
					end()
					continue
				}
				held = append(held, end)
				if i == n-1 {
					b.StopTimer()
					runtime.GC()
					runtime.ReadMemStats(&after)
					b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(n), "heap-B/session")
					b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/session")
					if got := e.m.Sessions(); got < n {
						b.Fatalf("%d sessions registered, want %d", got, n)
					}
					b.StartTimer()
				}
			}
		})
	}
}
