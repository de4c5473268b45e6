// Command feedback-bench measures the module on this machine, in one run:
// REST throughput against the ceiling of a plain Caddy `respond` route,
// answer → waiting agent and answer → WebSocket watcher latency (same and
// cross instance), the cost of held connections, and Redis memory per
// pending session. It starts its own redis-server and two Caddy processes on
// loopback ports, bounds every loop, and prints a Markdown report.
//
//	go run ./cmd/feedback-bench                 # defaults: 5 s per point, 10,000 held connections
//	go run ./cmd/feedback-bench -quick          # 2 s per point, 1,000 held connections
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

var (
	caddyPath   = flag.String("caddy", "", "caddy binary with the module (default: build ./cmd/caddy)")
	duration    = flag.Duration("duration", 5*time.Second, "length of each throughput point")
	concList    = flag.String("concurrency", "1,16,64", "concurrency levels for throughput")
	held        = flag.Int("held", 10000, "waiting MCP calls and WebSocket watchers to hold")
	samples     = flag.Int("samples", 200, "latency samples per case")
	quick       = flag.Bool("quick", false, "short run: 2 s points, 1,000 held connections, 50 samples")
	out         = flag.String("out", "", "also write the report to this file")
	profileDir  = flag.String("profile", "", "write CPU profiles of Caddy during the create and submit points here")
	storeFlavor = flag.String("store", "redis", "redis or memory (memory: cross-instance cases are skipped)")
)

const secret = "feedback-bench-secret-0123456789abcdef"

func main() {
	flag.Parse()
	if *quick { // a flag given explicitly wins over -quick
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			*duration = 2 * time.Second
		}
		if !set["held"] {
			*held = 1000
		}
		if !set["samples"] {
			*samples = 50
		}
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "feedback-bench:", err)
		os.Exit(1)
	}
}

type report struct{ b strings.Builder }

func (r *report) f(format string, a ...any) { fmt.Fprintf(&r.b, format, a...) }

func run() error {
	raiseFileLimit()
	dir, err := os.MkdirTemp("", "feedback-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := *caddyPath
	if bin == "" {
		bin = filepath.Join(dir, "caddy")
		fmt.Fprintln(os.Stderr, "building caddy…")
		if err := harness.BuildCaddy(bin, os.Stderr); err != nil {
			return err
		}
	}
	var redis *redistest.Server
	storeLine := ""
	if *storeFlavor == "redis" {
		redis, err = redistest.StartIn(filepath.Join(dir, "redis"), "--maxclients", "100000")
		if err != nil {
			return err
		}
		defer redis.Stop()
		storeLine = "store redis " + redis.URL()
	}
	a, err := startCaddy(bin, filepath.Join(dir, "a"), storeLine)
	if err != nil {
		return err
	}
	defer a.Stop()
	var b *harness.Caddy
	if redis != nil {
		if b, err = startCaddy(bin, filepath.Join(dir, "b"), storeLine); err != nil {
			return err
		}
		defer b.Stop()
	}
	tok, _ := auth.Mint([]byte(secret), auth.TokenOptions{Subject: "bench", TTL: 2 * time.Hour})

	var r report
	host, _ := os.Hostname()
	r.f("# feedback-bench\n\n%s, %d CPUs, %s, store %s; Caddy and the load generator share the machine.\n\n",
		host, runtime.NumCPU(), runtime.Version(), *storeFlavor)

	if err := throughput(&r, a, tok); err != nil {
		return err
	}
	if err := latencies(&r, a, b, tok); err != nil {
		return err
	}
	if err := heldConnections(&r, a, tok); err != nil {
		return err
	}
	if redis != nil {
		if err := redisMemory(&r, a, redis, tok); err != nil {
			return err
		}
	}
	fmt.Print(r.b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(r.b.String()), 0o644)
	}
	return nil
}

// ---- processes ----

// benchSites serves the module and, beside it, the plain `respond` route
// that is the ceiling for throughput; caps that would stop the load are off.
const benchSites = `
http://127.0.0.1:{HTTP} {
	handle /plain {
		respond "ok" 200
	}
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		%s
		max_pending_per_subject off
		creates_per_minute off
		elicitation off
		ws_max_per_subject 1000000
		mcp_max_sessions_per_subject 1000
	}
}
`

// startCaddy runs an instance in dir (internal/harness: loopback ports,
// its own XDG directories, caddy.log there) and waits for /health.
func startCaddy(bin, dir, storeLine string) (*harness.Caddy, error) {
	c, err := harness.NewCaddy(bin, dir, "JWT_SECRET="+secret)
	if err != nil {
		return nil, err
	}
	if err := c.Start(fmt.Sprintf(benchSites, storeLine)); err != nil {
		return nil, err
	}
	return c, nil
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// ---- HTTP helpers ----

var httpClient = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}}

func call(method, url, body string, hdr ...string) (harness.Response, error) {
	return harness.Do(httpClient, method, url, body, hdr...)
}

type session struct{ id, capTok string }

func create(base, tok, body string) (session, error) {
	resp, err := call("POST", base+"/api/feedback/create", body, "Authorization", "Bearer "+tok)
	if err != nil || resp.Status != 201 {
		return session{}, fmt.Errorf("create: %d %s %v", resp.Status, resp.Body, err)
	}
	var cr struct{ SessionID, FeedbackURL string }
	if err := json.Unmarshal([]byte(resp.Body), &cr); err != nil {
		return session{}, err
	}
	_, capTok, _ := strings.Cut(cr.FeedbackURL, "#t=")
	return session{cr.SessionID, capTok}, nil
}

func submit(base string, s session, text string) error {
	resp, err := call("POST", base+"/api/feedback/"+s.id+"/submit", fmt.Sprintf(`{"freeText":%q}`, text), "X-Feedback-Token", s.capTok)
	if err != nil || resp.Status != 200 {
		return fmt.Errorf("submit: %d %s %v", resp.Status, resp.Body, err)
	}
	return nil
}

// ---- throughput ----

// load runs fn from conc goroutines for the configured duration and returns
// requests per second; fn returns false on a failed request.
func load(conc int, fn func(worker, i int) bool) (float64, int64) {
	var n, failed atomic.Int64
	stop := time.Now().Add(*duration)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				if fn(w, i) {
					n.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), failed.Load()
}

func throughput(r *report, a *harness.Caddy, tok string) error {
	var levels []int
	for _, s := range strings.Split(*concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -concurrency %q", *concList)
		}
		levels = append(levels, n)
	}
	r.f("## REST throughput (requests/s; ratio = / plain `respond` route at the same concurrency)\n\n")
	r.f("| concurrency | plain respond | create | ratio | status | ratio | submit | ratio | errors |\n|---|---|---|---|---|---|---|---|---|\n")
	body := `{"message":"Deploy to production?","predefinedOptions":["yes","no","later"],"timeout":3600,"metadata":{"pr":42}}`
	for _, conc := range levels {
		plain, pf := load(conc, func(int, int) bool {
			resp, err := call("GET", a.HTTP+"/plain", "")
			return err == nil && resp.Status == 200
		})
		var mu sync.Mutex
		var made []session
		stopProf := profile(a, fmt.Sprintf("create-c%d", conc))
		cr, cf := load(conc, func(int, int) bool {
			s, err := create(a.HTTP, tok, body)
			if err != nil {
				return false
			}
			mu.Lock()
			made = append(made, s)
			mu.Unlock()
			return true
		})
		stopProf()
		statusID := made[0].id
		sr, sf := load(conc, func(int, int) bool {
			resp, err := call("GET", a.HTTP+"/api/feedback/"+statusID+"/status", "", "Authorization", "Bearer "+tok)
			return err == nil && resp.Status == 200
		})
		// Submit answers the sessions the create point made, each once.
		var next atomic.Int64
		stopProf = profile(a, fmt.Sprintf("submit-c%d", conc))
		sb, sbf := load(conc, func(int, int) bool {
			i := next.Add(1) - 1
			if int(i) >= len(made) {
				return false
			}
			return submit(a.HTTP, made[i], "yes") == nil
		})
		stopProf()
		if int(next.Load()) > len(made) { // ran out of sessions: not errors
			sbf -= next.Load() - int64(len(made))
		}
		r.f("| %d | %.0f | %.0f | %.2f | %.0f | %.2f | %.0f | %.2f | %d |\n", conc, plain, cr, cr/plain, sr, sr/plain, sb, sb/plain, pf+cf+sf+sbf)
	}
	r.f("\nsubmit runs until the sessions made by the create point are answered, so it may stop early.\n\n")
	return nil
}

// profile records a CPU profile of Caddy (through its admin pprof) while a
// point runs, when -profile is set.
func profile(a *harness.Caddy, name string) func() {
	if *profileDir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		secs := int(duration.Seconds())
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", a.Admin, secs))
		if err != nil {
			return
		}
		defer resp.Body.Close()
		_ = os.MkdirAll(*profileDir, 0o755)
		f, err := os.Create(filepath.Join(*profileDir, name+".pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// ---- latency ----

type dist []time.Duration

func (d dist) pct(p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func (d dist) row(name string) string {
	if len(d) == 0 {
		return fmt.Sprintf("| %s | – | – | – | 0 |\n", name)
	}
	return fmt.Sprintf("| %s | %v | %v | %v | %d |\n", name, d.pct(0.5).Round(10*time.Microsecond), d.pct(0.99).Round(10*time.Microsecond), d.pct(1).Round(10*time.Microsecond), len(d))
}

func mcpClient(ctx context.Context, base, tok string) (*client.Client, error) {
	c, err := client.NewStreamableHttpClient(base+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}))
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25" // what the TS SDK and today's clients negotiate
	init.Params.ClientInfo = mcp.Implementation{Name: "feedback-bench", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		return nil, fmt.Errorf("MCP initialize: %w", err)
	}
	return c, nil
}

// waitResult calls get_feedback_result with wait and returns once it
// answers with a submitted status.
func waitResult(ctx context.Context, c *client.Client, id string) error {
	req := mcp.CallToolRequest{}
	req.Params.Name = "get_feedback_result"
	req.Params.Arguments = map[string]any{"sessionId": id, "wait": 240}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(res)
	if res.IsError || !bytes.Contains(b, []byte(`"submitted"`)) {
		return fmt.Errorf("get_feedback_result: %s", b)
	}
	return nil
}

// sampleLatency measures, *samples times, from sending an answer through
// sub to the waiter having it. arm sets a waiter up on a new session made on
// a and returns a function that blocks until that waiter has the answer.
func sampleLatency(a, sub *harness.Caddy, tok string, arm func(s session) (func() error, error)) (dist, error) {
	var d dist
	for range *samples {
		s, err := create(a.HTTP, tok, `{"message":"latency"}`)
		if err != nil {
			return nil, err
		}
		wait, err := arm(s)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := submit(sub.HTTP, s, "yes"); err != nil {
			return nil, err
		}
		if err := wait(); err != nil {
			return nil, err
		}
		d = append(d, time.Since(start))
	}
	return d, nil
}

func latencies(r *report, a, b *harness.Caddy, tok string) error {
	ctx := context.Background()
	r.f("## Answer → waiter latency (from sending the submit to the waiter having the answer)\n\n| case | p50 | p99 | max | samples |\n|---|---|---|---|---|\n")
	mc, err := mcpClient(ctx, a.HTTP, tok)
	if err != nil {
		return err
	}
	defer mc.Close()
	mcpWaiter := func(s session) (func() error, error) {
		done := make(chan error, 1)
		go func() { done <- waitResult(ctx, mc, s.id) }()
		time.Sleep(20 * time.Millisecond) // let the call reach its wait; a benchmark, not a test
		return func() error { return <-done }, nil
	}
	wsWaiter := func(s session) (func() error, error) {
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.HTTP, "http")+"/ws/"+s.id,
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err != nil {
			return nil, fmt.Errorf("websocket: %w", err)
		}
		if _, _, err := conn.Read(ctx); err != nil { // connection_established: the watcher is registered
			return nil, err
		}
		return func() error {
			defer conn.Close(websocket.StatusNormalClosure, "")
			for {
				_, msg, err := conn.Read(ctx)
				if err != nil {
					return err
				}
				if bytes.Contains(msg, []byte(`"feedback_submitted"`)) {
					return nil
				}
			}
		}, nil
	}
	for _, w := range []struct {
		name string
		arm  func(session) (func() error, error)
	}{{"MCP get_feedback_result wait", mcpWaiter}, {"WebSocket watcher", wsWaiter}} {
		for _, tg := range []struct {
			name string
			sub  *harness.Caddy
		}{{"same instance", a}, {"cross instance", b}} {
			if tg.sub == nil {
				continue
			}
			d, err := sampleLatency(a, tg.sub, tok, w.arm)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", w.name, tg.name, err)
			}
			r.f("%s", d.row(w.name+", "+tg.name))
		}
	}
	r.f("\n")
	return nil
}

// ---- held connections ----

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// stats reads the Caddy process's memory in use (Go heap and stacks, after
// a GC, from its admin pprof endpoint; RSS lags behind frees) and goroutines.
func stats(c *harness.Caddy) (inUse, goroutines int) {
	if resp, err := call("GET", c.Admin+"/debug/pprof/heap?gc=1&debug=1", ""); err == nil {
		for _, re := range []*regexp.Regexp{regexp.MustCompile(`# HeapInuse = (\d+)`), regexp.MustCompile(`# Stack = (\d+) /`)} {
			if m := re.FindStringSubmatch(resp.Body); m != nil {
				n, _ := strconv.Atoi(m[1])
				inUse += n
			}
		}
	}
	if resp, err := call("GET", c.Admin+"/debug/pprof/goroutine?debug=1", ""); err == nil {
		if m := goroutineTotal.FindStringSubmatch(resp.Body); m != nil {
			goroutines, _ = strconv.Atoi(m[1])
		}
	}
	return
}

func heldConnections(r *report, a *harness.Caddy, tok string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := *held
	r.f("## Held connections on one instance (%d each)\n\n| what | memory / connection (Go heap + stacks) | goroutines / connection |\n|---|---|---|\n", n)
	sess := make([]session, n)
	for i := range sess {
		s, err := create(a.HTTP, tok, `{"message":"held","timeout":3600}`)
		if err != nil {
			return err
		}
		sess[i] = s
	}
	measure := func(name string, open func(i int) error) error {
		mem0, g0 := stats(a)
		sem := make(chan struct{}, 256)
		errs := make(chan error, 1)
		var wg sync.WaitGroup
		var opened atomic.Int64
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := open(i); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				opened.Add(1)
			})
		}
		wg.Wait()
		select {
		case err := <-errs:
			return fmt.Errorf("%s: %w (opened %d)", name, err, opened.Load())
		default:
		}
		// Let the server settle into the wait before reading its figures.
		time.Sleep(2 * time.Second)
		mem1, g1 := stats(a)
		r.f("| %s | %.1f KB | %.2f |\n", name, float64(mem1-mem0)/1024/float64(n), float64(g1-g0)/float64(n))
		return nil
	}
	// Waiting MCP calls: each session's get_feedback_result with wait, over
	// 64 MCP sessions (a client holds many calls at once, as an agent host would).
	clients := make([]*client.Client, 64)
	for i := range clients {
		c, err := mcpClient(ctx, a.HTTP, tok)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	var waiting sync.WaitGroup
	err := measure("waiting MCP calls", func(i int) error {
		started := make(chan struct{})
		waiting.Go(func() {
			close(started)
			_ = waitResult(ctx, clients[i%len(clients)], sess[i].id)
		})
		<-started
		return nil
	})
	if err != nil {
		return err
	}
	cancel()
	waiting.Wait()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	conns := make([]*websocket.Conn, n)
	err = measure("WebSocket watchers", func(i int) error {
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.HTTP, "http")+"/ws/"+sess[i].id,
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err != nil {
			return err
		}
		if _, _, err := conn.Read(ctx); err != nil {
			return err
		}
		conns[i] = conn
		return nil
	})
	for _, c := range conns {
		if c != nil {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}
	r.f("\nOne watcher per session (the per-subject cap is lifted for the run); the MCP calls share 64 MCP sessions.\n\n")
	return err
}

// ---- Redis memory ----

func redisMemory(r *report, a *harness.Caddy, redis *redistest.Server, tok string) error {
	used := func() (int, error) {
		out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", redis.Addr[strings.LastIndexByte(redis.Addr, ':')+1:], "info", "memory").Output()
		if err != nil {
			return 0, fmt.Errorf("redis-cli: %w", err)
		}
		m := regexp.MustCompile(`used_memory:(\d+)`).FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("no used_memory in %s", out)
		}
		return strconv.Atoi(string(m[1]))
	}
	before, err := used()
	if err != nil {
		return err
	}
	const n = 2000
	for range n {
		if _, err := create(a.HTTP, tok, `{"message":"How should the release notes describe the migration? Pick one or write your own.","predefinedOptions":["Short","Detailed","Skip"],"timeout":3600,"metadata":{"repo":"org/app","pr":1234}}`); err != nil {
			return err
		}
	}
	after, err := used()
	if err != nil {
		return err
	}
	r.f("## Redis memory\n\n%d bytes per pending session (a %d-character question with 3 options and metadata; `used_memory` delta over %d sessions).\n",
		(after-before)/n, 86, n)
	return nil
}
