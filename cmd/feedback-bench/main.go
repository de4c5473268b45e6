// Command feedback-bench measures the module on this machine, in one run:
// REST throughput against the ceiling of a plain Caddy `respond` route
// (with its own Go client and, with -wrk, with wrk), answer → waiting agent
// and answer → WebSocket watcher latency (same and cross instance), the
// cost of held connections (process RSS, Go heap and stacks, goroutines,
// and answer latency while they are held), and Redis memory per pending
// session. It starts its own redis-server and Caddy processes on loopback
// ports, bounds every loop, and prints a Markdown report.
//
//	go run ./cmd/feedback-bench                 # defaults: 5 s per point, 2,000 and 10,000 held connections
//	go run ./cmd/feedback-bench -quick          # 2 s per point, 1,000 held connections
//	go run ./cmd/feedback-bench -only throughput,wrk -wrk 32 -repeat 5
//	go run ./cmd/feedback-bench -only held -held 2000,10000
//	go run ./cmd/feedback-bench -only held -held 2000,10000 -held-elicit accept   # agents that take a URL elicitation
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	heldList    = flag.String("held", "2000,10000", "waiting MCP calls and WebSocket watchers to hold, one or more counts (e.g. 2000,10000); each count is measured on a fresh Caddy process")
	samples     = flag.Int("samples", 200, "latency samples per case")
	quick       = flag.Bool("quick", false, "short run: 2 s points, 1,000 held connections, 50 samples")
	out         = flag.String("out", "", "also write the report to this file")
	profileDir  = flag.String("profile", "", "write CPU profiles of Caddy during the create and submit points here")
	storeFlavor = flag.String("store", "redis", "redis or memory (memory: cross-instance cases are skipped)")
	wrkConns    = flag.String("wrk", "", "also measure throughput with wrk (on PATH) at these connection counts, e.g. 32")
	wrkThreads  = flag.Int("wrk-threads", 2, "wrk threads")
	repeat      = flag.Int("repeat", 1, "rounds of each throughput point; the report gives medians")
	heldElicit  = flag.String("held-elicit", "", "held section: the MCP agents declare URL elicitation and the server sends one (elicitation url, not off); accept: they answer it at once (a client that opens the link), open: they leave it open while the call waits; the WebSocket rows are left out")
	only        = flag.String("only", "", "run only these sections, comma-separated: throughput, wrk, latency, held, redis (default: all but wrk unless -wrk is given)")
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
			*heldList = "1000"
		}
		if !set["samples"] {
			*samples = 50
		}
	}
	if *heldElicit != "" && *heldElicit != "accept" && *heldElicit != "open" {
		fmt.Fprintf(os.Stderr, "feedback-bench: -held-elicit %q: want accept or open\n", *heldElicit)
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "feedback-bench:", err)
		os.Exit(1)
	}
}

type report struct{ b strings.Builder }

func (r *report) f(format string, a ...any) { fmt.Fprintf(&r.b, format, a...) }

// sections says which parts of the report run.
func sections() (map[string]bool, error) {
	want := map[string]bool{}
	if *only == "" {
		for _, s := range []string{"throughput", "latency", "held", "redis"} {
			want[s] = true
		}
		want["wrk"] = *wrkConns != ""
		return want, nil
	}
	for _, s := range strings.Split(*only, ",") {
		switch s = strings.TrimSpace(s); s {
		case "throughput", "wrk", "latency", "held", "redis":
			want[s] = true
		default:
			return nil, fmt.Errorf("unknown section %q in -only", s)
		}
	}
	if want["wrk"] && *wrkConns == "" {
		*wrkConns = "32"
	}
	return want, nil
}

func intList(name, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad -%s %q", name, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run() error {
	want, err := sections()
	if err != nil {
		return err
	}
	if *repeat < 1 {
		*repeat = 1
	}
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
	env := benchEnv{bin: bin, dir: dir}
	if *storeFlavor == "redis" {
		env.redis, err = redistest.StartIn(filepath.Join(dir, "redis"), "--maxclients", "100000")
		if err != nil {
			return err
		}
		defer env.redis.Stop()
		env.storeLine = "store redis " + env.redis.URL()
	}
	a, err := env.caddy("a")
	if err != nil {
		return err
	}
	defer a.Stop()
	var b *harness.Caddy
	if env.redis != nil && want["latency"] {
		if b, err = env.caddy("b"); err != nil {
			return err
		}
		defer b.Stop()
	}
	tok, _ := auth.Mint([]byte(secret), auth.TokenOptions{Subject: "bench", TTL: 2 * time.Hour})

	var r report
	host, _ := os.Hostname()
	r.f("# feedback-bench\n\n%s, %d CPUs (%s), %s, store %s; Caddy, Redis and the load generator share the machine.\n\n",
		host, runtime.NumCPU(), cpuModel(), runtime.Version(), *storeFlavor)
	r.f("Load average at start: %s\n\n", loadAvg())

	if want["throughput"] {
		if err := throughput(&r, a, tok); err != nil {
			return err
		}
	}
	if want["wrk"] {
		if err := wrkThroughput(&r, a, env.redis, tok); err != nil {
			return err
		}
	}
	if want["latency"] {
		if err := latencies(&r, a, b, tok); err != nil {
			return err
		}
	}
	if want["held"] {
		if err := heldConnections(&r, &env, a, tok); err != nil {
			return err
		}
	}
	if want["redis"] && env.redis != nil {
		if err := redisMemory(&r, a, env.redis, tok); err != nil {
			return err
		}
	}
	r.f("\nLoad average at end: %s\n", loadAvg())
	fmt.Print(r.b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(r.b.String()), 0o644)
	}
	return nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
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
		elicitation %s
		ws_max_per_subject 1000000
		mcp_max_sessions_per_subject 1000
		mcp_max_calls_per_subject 1000000
	}
}
`

// benchEnv starts Caddy instances on the run's store.
type benchEnv struct {
	bin, dir, storeLine string
	redis               *redistest.Server
	n                   int
}

// caddy runs an instance in a new directory (internal/harness: loopback
// ports, its own XDG directories, caddy.log there) and waits for /health.
func (e *benchEnv) caddy(name string) (*harness.Caddy, error) {
	return e.caddyElicit(name, "off")
}

// caddyElicit is caddy with this `elicitation` setting.
func (e *benchEnv) caddyElicit(name, elicitation string) (*harness.Caddy, error) {
	e.n++
	c, err := harness.NewCaddy(e.bin, filepath.Join(e.dir, fmt.Sprintf("%s%d", name, e.n)), "JWT_SECRET="+secret)
	if err != nil {
		return nil, err
	}
	if err := c.Start(fmt.Sprintf(benchSites, e.storeLine, elicitation)); err != nil {
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

// createMany makes n sessions from 64 goroutines.
func createMany(base, tok, body string, n int) ([]session, error) {
	out := make([]session, n)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				s, err := create(base, tok, body)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return nil, *e
	}
	return out, nil
}

func submit(base string, s session, text string) error {
	resp, err := call("POST", base+"/api/feedback/"+s.id+"/submit", fmt.Sprintf(`{"freeText":%q}`, text), "X-Feedback-Token", s.capTok)
	if err != nil || resp.Status != 200 {
		return fmt.Errorf("submit: %d %s %v", resp.Status, resp.Body, err)
	}
	return nil
}

// ---- throughput ----

const createBody = `{"message":"Deploy to production?","predefinedOptions":["yes","no","later"],"timeout":3600,"metadata":{"pr":42}}`

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

// point is one throughput measurement across rounds.
type point struct{ rates, ratios []float64 }

func (p *point) add(rate, plain float64) {
	p.rates = append(p.rates, rate)
	p.ratios = append(p.ratios, rate/plain)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cell is "rate | ratio" with the ratio's range over rounds when there are several.
func (p *point) cell() string {
	if len(p.ratios) == 1 {
		return fmt.Sprintf("%.0f | %.2f", median(p.rates), median(p.ratios))
	}
	return fmt.Sprintf("%.0f | %.2f (%.2f–%.2f)", median(p.rates), median(p.ratios), slices.Min(p.ratios), slices.Max(p.ratios))
}

func throughput(r *report, a *harness.Caddy, tok string) error {
	levels, err := intList("concurrency", *concList)
	if err != nil {
		return err
	}
	r.f("## REST throughput, Go client (requests/s; ratio = / plain `respond` route at the same concurrency; medians of %d rounds)\n\n", *repeat)
	r.f("| concurrency | plain respond | create | ratio | status | ratio | status, many ids | ratio | submit | ratio | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, conc := range levels {
		var plain, cr, st, stMany, sb point
		var errs int64
		for round := range *repeat {
			pr, pf := load(conc, func(int, int) bool {
				resp, err := call("GET", a.HTTP+"/plain", "")
				return err == nil && resp.Status == 200
			})
			plain.add(pr, pr)
			var mu sync.Mutex
			var made []session
			stopProf := profile(a, fmt.Sprintf("create-c%d-r%d", conc, round))
			c, cf := load(conc, func(int, int) bool {
				s, err := create(a.HTTP, tok, createBody)
				if err != nil {
					return false
				}
				mu.Lock()
				made = append(made, s)
				mu.Unlock()
				return true
			})
			stopProf()
			cr.add(c, pr)
			if len(made) == 0 {
				return errors.New("create made no sessions")
			}
			statusID := made[0].id
			stopProf = profile(a, fmt.Sprintf("status-c%d-r%d", conc, round))
			s, sf := load(conc, func(int, int) bool {
				resp, err := call("GET", a.HTTP+"/api/feedback/"+statusID+"/status", "", "Authorization", "Bearer "+tok)
				return err == nil && resp.Status == 200
			})
			stopProf()
			st.add(s, pr)
			var nextID atomic.Int64
			sm, smf := load(conc, func(int, int) bool {
				id := made[int(nextID.Add(1)-1)%len(made)].id
				resp, err := call("GET", a.HTTP+"/api/feedback/"+id+"/status", "", "Authorization", "Bearer "+tok)
				return err == nil && resp.Status == 200
			})
			stMany.add(sm, pr)
			// Submit answers the sessions the create point made, each once.
			var next atomic.Int64
			stopProf = profile(a, fmt.Sprintf("submit-c%d-r%d", conc, round))
			b, sbf := load(conc, func(int, int) bool {
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
			sb.add(b, pr)
			errs += pf + cf + sf + smf + sbf
		}
		r.f("| %d | %.0f | %s | %s | %s | %s | %d |\n", conc, median(plain.rates), cr.cell(), st.cell(), stMany.cell(), sb.cell(), errs)
	}
	r.f("\nsubmit runs until the sessions made by the create point are answered, so it may stop early; \"status, many ids\" reads those sessions in turn, so no read repeats an id soon.\n\n")
	return nil
}

// ---- wrk ----

const wrkCreateLua = `wrk.method = "POST"
wrk.body = %q
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
`

// wrkListLua walks a file of "id token" lines, each thread its own share;
// past the end it asks for an unknown path, which wrk counts as non-2xx.
const wrkListLua = `local lines = {}
local i = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  local n, step = 0, tonumber(args[2])
  for line in io.lines(args[1]) do
    n = n + 1
    if (n - 1) %% step == tid - 1 then table.insert(lines, line) end
  end
end
function request()
  i = i + 1
  local line = lines[i]
  if line == nil then return wrk.format("GET", "/api/feedback/ran-out/status") end
  local id, tok = line:match("(%%S+) (%%S+)")
  %s
end
`

const (
	wrkSubmitReq = `return wrk.format("POST", "/api/feedback/" .. id .. "/submit", {["Content-Type"] = "application/json", ["X-Feedback-Token"] = tok}, '{"freeText":"yes"}')`
	wrkStatusReq = `return wrk.format("GET", "/api/feedback/" .. id .. "/status", {["Authorization"] = "Bearer %s"})`
)

var (
	wrkRate   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSock   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// wrk runs wrk against url and returns requests/s and failures; header,
// when set, is sent with every request, and args go to the script.
func wrk(conns int, url, script, header string, args ...string) (float64, int64, error) {
	cmdArgs := []string{"-t", strconv.Itoa(*wrkThreads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", max(1, int(duration.Seconds())))}
	if header != "" {
		cmdArgs = append(cmdArgs, "-H", header)
	}
	if script != "" {
		cmdArgs = append(cmdArgs, "-s", script)
	}
	cmdArgs = append(cmdArgs, url)
	if len(args) > 0 {
		cmdArgs = append(append(cmdArgs, "--"), args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	outb, err := exec.CommandContext(ctx, "wrk", cmdArgs...).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %w\n%s", err, outb)
	}
	m := wrkRate.FindSubmatch(outb)
	if m == nil {
		return 0, 0, fmt.Errorf("wrk: no Requests/sec in\n%s", outb)
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	var failed int64
	if m := wrkNon2xx.FindSubmatch(outb); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		failed += n
	}
	if m := wrkSock.FindSubmatch(outb); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.ParseInt(string(g), 10, 64)
			failed += n
		}
	}
	return rate, failed, nil
}

func writeSessions(path string, ss []session) error {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.id + " " + s.capTok + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// cpuTicks is the CPU time (user + system, in clock ticks of 10 ms, the
// Linux USER_HZ) process pid has used, from /proc; 0 when it can't be read.
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it don't.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// cpuCost is CPU time per request of Caddy and Redis over wrk points, in µs:
// what a request costs each process whatever else shares the machine.
type cpuCost struct{ caddy, redis []float64 }

// measure runs fn (a wrk point returning its rate) and records the CPU
// Caddy and Redis used per request during it.
func (c *cpuCost) measure(caddyPID, redisPID int, fn func() (float64, int64, error)) (float64, int64, error) {
	c0, r0 := cpuTicks(caddyPID), cpuTicks(redisPID)
	rate, failed, err := fn()
	if err != nil || rate == 0 {
		return rate, failed, err
	}
	n := rate * duration.Seconds()
	c.caddy = append(c.caddy, float64(cpuTicks(caddyPID)-c0)*1e4/n)
	c.redis = append(c.redis, float64(cpuTicks(redisPID)-r0)*1e4/n)
	return rate, failed, err
}

func (c *cpuCost) cell() string {
	return fmt.Sprintf("%.0f / %.0f", median(c.caddy), median(c.redis))
}

func wrkThroughput(r *report, a *harness.Caddy, redis *redistest.Server, tok string) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("-wrk needs wrk on PATH (apt-get install wrk): %w", err)
	}
	levels, err := intList("wrk", *wrkConns)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "feedback-bench-wrk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	write := func(name, text string) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, []byte(text), 0o600)
	}
	createLua, err := write("create.lua", fmt.Sprintf(wrkCreateLua, createBody, tok))
	if err != nil {
		return err
	}
	submitLua, err := write("submit.lua", fmt.Sprintf(wrkListLua, wrkSubmitReq))
	if err != nil {
		return err
	}
	statusLua, err := write("status.lua", fmt.Sprintf(wrkListLua, fmt.Sprintf(wrkStatusReq, tok)))
	if err != nil {
		return err
	}
	statusSess, err := create(a.HTTP, tok, createBody)
	if err != nil {
		return err
	}
	r.f("## REST throughput, wrk (%d threads; requests/s; ratio = / plain `respond` route; medians of %d rounds)\n\n", *wrkThreads, *repeat)
	r.f("| connections | plain respond | create | ratio | status | ratio | status, many ids | ratio | submit | ratio | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	secs := duration.Seconds()
	caddyPID, redisPID := a.Process().Cmd.Process.Pid, 0
	if redis != nil {
		redisPID = redis.PID()
	}
	var cpuRows []string
	for _, conns := range levels {
		var plain, cr, st, stMany, sb point
		var cPlain, cCreate, cStatus, cMany, cSubmit cpuCost
		var errs int64
		for round := range *repeat {
			pr, pf, err := cPlain.measure(caddyPID, redisPID, func() (float64, int64, error) { return wrk(conns, a.HTTP+"/plain", "", "") })
			if err != nil {
				return err
			}
			plain.add(pr, pr)
			stop := profile(a, fmt.Sprintf("wrk-create-c%d-r%d", conns, round))
			c, cf, err := cCreate.measure(caddyPID, redisPID, func() (float64, int64, error) {
				return wrk(conns, a.HTTP+"/api/feedback/create", createLua, "")
			})
			stop()
			if err != nil {
				return err
			}
			cr.add(c, pr)
			stop = profile(a, fmt.Sprintf("wrk-status-c%d-r%d", conns, round))
			s, sf, err := cStatus.measure(caddyPID, redisPID, func() (float64, int64, error) {
				return wrk(conns, a.HTTP+"/api/feedback/"+statusSess.id+"/status", "", "Authorization: Bearer "+tok)
			})
			stop()
			if err != nil {
				return err
			}
			st.add(s, pr)
			// Enough sessions for submit to run the whole point: never more
			// than 80 % of the plain rate.
			ss, err := createMany(a.HTTP, tok, createBody, int(pr*0.8*secs)+1000)
			if err != nil {
				return err
			}
			list := filepath.Join(dir, "sessions.txt")
			if err := writeSessions(list, ss); err != nil {
				return err
			}
			sm, smf, err := cMany.measure(caddyPID, redisPID, func() (float64, int64, error) {
				return wrk(conns, a.HTTP, statusLua, "", list, strconv.Itoa(*wrkThreads))
			})
			if err != nil {
				return err
			}
			stMany.add(sm, pr)
			stop = profile(a, fmt.Sprintf("wrk-submit-c%d-r%d", conns, round))
			b, sbf, err := cSubmit.measure(caddyPID, redisPID, func() (float64, int64, error) {
				return wrk(conns, a.HTTP, submitLua, "", list, strconv.Itoa(*wrkThreads))
			})
			stop()
			if err != nil {
				return err
			}
			sb.add(b, pr)
			errs += pf + cf + sf + smf + sbf
		}
		r.f("| %d | %.0f | %s | %s | %s | %s | %d |\n", conns, median(plain.rates), cr.cell(), st.cell(), stMany.cell(), sb.cell(), errs)
		cpuRows = append(cpuRows, fmt.Sprintf("| %d | %s | %s | %s | %s | %s |\n", conns, cPlain.cell(), cCreate.cell(), cStatus.cell(), cMany.cell(), cSubmit.cell()))
	}
	r.f("\nCPU time per request, Caddy / Redis (µs; from /proc, medians of the rounds):\n\n")
	r.f("| connections | plain respond | create | status | status, many ids | submit |\n|---|---|---|---|---|---|\n")
	for _, row := range cpuRows {
		r.f("%s", row)
	}
	r.f("\nwrk -t %d -c N -d %s; status reads one session; \"status, many ids\" and submit walk sessions made for the round (each answered once).\n\n", *wrkThreads, *duration)
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
		secs := max(1, int(duration.Seconds()))
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

// saveProfiles writes Caddy's heap (in use, after a GC) and goroutine
// profiles while connections are held, when -profile is set.
func saveProfiles(c *harness.Caddy, name string) {
	if *profileDir == "" {
		return
	}
	_ = os.MkdirAll(*profileDir, 0o755)
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", name + "-heap.pprof"},
		{"/debug/pprof/goroutine", name + "-goroutine.pprof"},
		{"/debug/pprof/goroutine?debug=2", name + "-goroutines.txt"},
	} {
		resp, err := call("GET", c.Admin+p.path, "")
		if err != nil {
			continue
		}
		_ = os.WriteFile(filepath.Join(*profileDir, p.file), []byte(resp.Body), 0o644)
	}
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

// mcpAgent is one MCP client; its calls' first progress notification
// tells that the server holds the call in its wait.
type mcpAgent struct {
	c    *client.Client
	mu   sync.Mutex
	subs map[string]chan struct{}
}

func mcpClient(ctx context.Context, base, tok string) (*mcpAgent, error) {
	return mcpElicitClient(ctx, base, tok, "")
}

// mcpElicitClient is mcpClient for a client that declares URL elicitation
// (elicit "accept" or "open", see -held-elicit); "" declares none.
func mcpElicitClient(ctx context.Context, base, tok, elicit string) (*mcpAgent, error) {
	tr, err := transport.NewStreamableHTTP(base+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}))
	if err != nil {
		return nil, err
	}
	var opts []client.ClientOption
	if elicit != "" {
		opts = append(opts,
			client.WithClientCapabilities(mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapability{URL: &struct{}{}}}),
			client.WithElicitationHandler(elicitHandler(elicit)))
	}
	c := client.NewClient(tr, opts...)
	ag := &mcpAgent{c: c, subs: map[string]chan struct{}{}}
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		key := fmt.Sprint(n.Params.AdditionalFields["progressToken"])
		ag.mu.Lock()
		ch := ag.subs[key]
		delete(ag.subs, key)
		ag.mu.Unlock()
		if ch != nil {
			close(ch)
		}
	})
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = "2025-11-25" // what the TS SDK and today's clients negotiate
	init.Params.ClientInfo = mcp.Implementation{Name: "feedback-bench", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		return nil, fmt.Errorf("MCP initialize: %w", err)
	}
	return ag, nil
}

func (ag *mcpAgent) Close() { _ = ag.c.Close() }

// ask asks a question through interactive_feedback, without waiting, and
// returns its id.
func (ag *mcpAgent) ask(ctx context.Context) (string, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "interactive_feedback"
	req.Params.Arguments = map[string]any{"message": "held", "timeout": 3600}
	res, err := ag.c.CallTool(ctx, req)
	if err != nil {
		return "", fmt.Errorf("interactive_feedback: %w", err)
	}
	var out struct {
		SessionID string `json:"sessionId"`
	}
	b, _ := json.Marshal(res.StructuredContent)
	if res.IsError || json.Unmarshal(b, &out) != nil || out.SessionID == "" {
		return "", fmt.Errorf("interactive_feedback: %s", b)
	}
	return out.SessionID, nil
}

// elicitHandler answers an elicitation as -held-elicit says: accept at
// once, or ("open") not until the call it came with has ended (mcp-go
// cancels ctx then).
type elicitHandler string

// elicited counts the elicitations the agents received.
var elicited atomic.Int64

func (h elicitHandler) Elicit(ctx context.Context, _ mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	elicited.Add(1)
	if h == "open" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept}}, nil
}

var progressSeq atomic.Int64

// wait calls get_feedback_result with wait. It returns once the server
// holds the call (its first progress notification arrived) and a function
// that blocks until the call answers with a submitted status.
func (ag *mcpAgent) wait(ctx context.Context, id string) (<-chan struct{}, func() error) {
	key := fmt.Sprint("p", progressSeq.Add(1))
	waiting := make(chan struct{})
	ag.mu.Lock()
	ag.subs[key] = waiting
	ag.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "get_feedback_result"
		req.Params.Arguments = map[string]any{"sessionId": id, "wait": 240}
		req.Params.Meta = &mcp.Meta{ProgressToken: key}
		res, err := ag.c.CallTool(ctx, req)
		if err == nil {
			b, _ := json.Marshal(res)
			if res.IsError || !bytes.Contains(b, []byte(`"submitted"`)) {
				err = fmt.Errorf("get_feedback_result: %s", b)
			}
		}
		done <- err
	}()
	// A call that fails before it waits must not leave the caller hanging.
	held := make(chan struct{})
	go func() {
		select {
		case <-waiting:
		case <-ctx.Done():
		}
		close(held)
	}()
	return held, func() error { return <-done }
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

// mcpWaiter arms a get_feedback_result wait through ag.
func mcpWaiter(ctx context.Context, ag *mcpAgent) func(s session) (func() error, error) {
	return func(s session) (func() error, error) {
		held, wait := ag.wait(ctx, s.id)
		<-held
		return wait, nil
	}
}

func latencies(r *report, a, b *harness.Caddy, tok string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.f("## Answer → waiter latency (from sending the submit to the waiter having the answer)\n\n| case | p50 | p99 | max | samples |\n|---|---|---|---|---|\n")
	ag, err := mcpClient(ctx, a.HTTP, tok)
	if err != nil {
		return err
	}
	defer ag.Close()
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
	}{{"MCP get_feedback_result wait", mcpWaiter(ctx, ag)}, {"WebSocket watcher", wsWaiter}} {
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

var (
	goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)
	heapInuse      = regexp.MustCompile(`# HeapInuse = (\d+)`)
	stackInuse     = regexp.MustCompile(`# Stack = (\d+) /`)
	vmRSS          = regexp.MustCompile(`VmRSS:\s+(\d+) kB`)
)

// procStats is one reading of the Caddy process.
type procStats struct{ rss, heap, stack, goroutines int }

// stats reads the Caddy process's RSS (from /proc), Go heap and stacks in
// use (after a GC, from its admin pprof endpoint) and goroutines.
func stats(c *harness.Caddy) (st procStats) {
	if resp, err := call("GET", c.Admin+"/debug/pprof/heap?gc=1&debug=1", ""); err == nil {
		for _, x := range []struct {
			re  *regexp.Regexp
			dst *int
		}{{heapInuse, &st.heap}, {stackInuse, &st.stack}} {
			if m := x.re.FindStringSubmatch(resp.Body); m != nil {
				*x.dst, _ = strconv.Atoi(m[1])
			}
		}
	}
	if resp, err := call("GET", c.Admin+"/debug/pprof/goroutine?debug=1", ""); err == nil {
		if m := goroutineTotal.FindStringSubmatch(resp.Body); m != nil {
			st.goroutines, _ = strconv.Atoi(m[1])
		}
	}
	if p := c.Process(); p != nil {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid)); err == nil {
			if m := vmRSS.FindSubmatch(b); m != nil {
				kb, _ := strconv.Atoi(string(m[1]))
				st.rss = kb << 10
			}
		}
	}
	return st
}

// openAll runs open for 0..n-1, 256 at a time, and returns the first error.
func openAll(n int, open func(i int) error) error {
	sem := make(chan struct{}, 256)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		if firstErr.Load() != nil {
			<-sem
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := open(i); err != nil {
				firstErr.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return *e
	}
	return nil
}

// settle lets the server's figures settle before they are read.
const settle = 2 * time.Second

func heldConnections(r *report, env *benchEnv, a *harness.Caddy, tok string) error {
	counts, err := intList("held", *heldList)
	if err != nil {
		return err
	}
	r.f("## Held connections on one instance\n\nEach row is a fresh Caddy process; growth from before the connections opened to %s after the last one was held, divided by their number.\n\n", settle)
	r.f("| held | what | RSS / connection | Go heap + stacks / connection (heap, stacks) | goroutines / connection | answer → waiter p50 | p99 | max |\n|---|---|---|---|---|---|---|---|\n")
	for _, n := range counts {
		sess, err := createMany(a.HTTP, tok, `{"message":"held","timeout":3600}`, n)
		if err != nil {
			return err
		}
		if err := heldMCP(r, env, tok, sess); err != nil {
			return err
		}
		if *heldElicit != "" {
			continue // elicitation is MCP's alone
		}
		if err := heldWS(r, env, tok, sess); err != nil {
			return err
		}
	}
	if *heldElicit != "" {
		r.f("\nMCP with -held-elicit %s: `elicitation url`, and every agent declares URL elicitation, so every waiting call also sends one; the agents %s. Each call waits on a question its own session asked through interactive_feedback before the measurement (only then does the session know its link), over max(64, held/64) sessions (a session remembers 64 links).\n", *heldElicit,
			map[string]string{"accept": "accept it at once", "open": "leave it open while the call waits"}[*heldElicit])
	}
	r.f("\nMCP: every call is get_feedback_result with wait over Streamable HTTP, each on its own HTTP connection, spread over 64 MCP sessions (as an agent host holds many), and counted as held once its first progress notification arrived; the latency is an answer on the same instance to one more waiting call while they are all held. WebSocket: one owner watcher per session, counted once connection_established arrived.\n\n")
	return nil
}

func (st procStats) row(before procStats, n int, name string) string {
	per := func(x, y int) float64 { return float64(x-y) / 1024 / float64(n) }
	return fmt.Sprintf("| %d | %s | %.1f KB | %.1f KB (%.1f, %.1f) | %.2f |", n, name,
		per(st.rss, before.rss), per(st.heap+st.stack, before.heap+before.stack), per(st.heap, before.heap), per(st.stack, before.stack),
		float64(st.goroutines-before.goroutines)/float64(n))
}

func heldMCP(r *report, env *benchEnv, tok string, sess []session) error {
	n := len(sess)
	elicitation, what := "off", "waiting MCP call"
	if *heldElicit != "" {
		elicitation, what = "url", "waiting MCP call, URL elicitation "+map[string]string{"accept": "accepted", "open": "left open"}[*heldElicit]
	}
	h, err := env.caddyElicit("held-mcp", elicitation)
	if err != nil {
		return err
	}
	defer h.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agents := make([]*mcpAgent, 64)
	if *heldElicit != "" {
		// A session remembers the links of its last 64 questions
		// (handlers/mcp_tools.go maxLinksPerSession): enough sessions that
		// every call's question still has its link.
		agents = make([]*mcpAgent, max(64, (n+63)/64))
	}
	for i := range agents {
		if agents[i], err = mcpElicitClient(ctx, h.HTTP, tok, *heldElicit); err != nil {
			return err
		}
		defer agents[i].Close()
	}
	probe, err := mcpClient(ctx, h.HTTP, tok)
	if err != nil {
		return err
	}
	defer probe.Close()
	// One answer before measuring, so that first-use costs are not counted.
	if _, err := sampleLatencyN(h, tok, mcpWaiter(ctx, probe), 3); err != nil {
		return err
	}
	if *heldElicit != "" {
		// A URL elicitation carries the answer link, which a session
		// knows only of the questions it asked itself (see
		// handlers/mcp_wait.go): each call waits on a question its own
		// agent asked, through the tool, in place of the REST-made one.
		sess = slices.Clone(sess)
		err := openAll(n, func(i int) error {
			id, err := agents[i%len(agents)].ask(ctx)
			sess[i].id = id
			return err
		})
		if err != nil {
			return fmt.Errorf("asking through MCP: %w", err)
		}
	}
	before := stats(h)
	elicited.Store(0)
	waits := make([]func() error, n)
	err = openAll(n, func(i int) error {
		held, wait := agents[i%len(agents)].wait(ctx, sess[i].id)
		select {
		case <-held:
		case <-time.After(time.Minute):
			return fmt.Errorf("call %d not held after a minute", i)
		}
		waits[i] = wait
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("waiting MCP calls: %w", err)
	}
	time.Sleep(settle) // a benchmark's settling time, not synchronisation
	after := stats(h)
	if got := elicited.Load(); *heldElicit != "" && got != int64(n) {
		return fmt.Errorf("%d of %d waiting calls sent an elicitation", got, n)
	}
	saveProfiles(h, fmt.Sprintf("held-mcp-%d", n))
	d, err := sampleLatencyN(h, tok, mcpWaiter(ctx, probe), *samples)
	if err != nil {
		return err
	}
	r.f("%s %v | %v | %v |\n", after.row(before, n, what), d.pct(0.5).Round(10*time.Microsecond), d.pct(0.99).Round(10*time.Microsecond), d.pct(1).Round(10*time.Microsecond))
	return nil
}

// sampleLatencyN is sampleLatency on one instance with k samples.
func sampleLatencyN(h *harness.Caddy, tok string, arm func(session) (func() error, error), k int) (dist, error) {
	saved := *samples
	*samples = k
	defer func() { *samples = saved }()
	return sampleLatency(h, h, tok, arm)
}

func heldWS(r *report, env *benchEnv, tok string, sess []session) error {
	n := len(sess)
	h, err := env.caddy("held-ws")
	if err != nil {
		return err
	}
	defer h.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dial := func(id string) (*websocket.Conn, error) {
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.HTTP, "http")+"/ws/"+id,
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err != nil {
			return nil, err
		}
		if _, _, err := conn.Read(ctx); err != nil {
			return nil, err
		}
		return conn, nil
	}
	// One watcher before measuring, so that first-use costs are not counted.
	warm, err := dial(sess[0].id)
	if err != nil {
		return err
	}
	warm.Close(websocket.StatusNormalClosure, "")
	before := stats(h)
	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	err = openAll(n, func(i int) error {
		c, err := dial(sess[i].id)
		conns[i] = c
		return err
	})
	if err != nil {
		return fmt.Errorf("WebSocket watchers: %w", err)
	}
	time.Sleep(settle) // a benchmark's settling time, not synchronisation
	after := stats(h)
	saveProfiles(h, fmt.Sprintf("held-ws-%d", n))
	r.f("%s – | – | – |\n", after.row(before, n, "WebSocket watcher"))
	return nil
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
