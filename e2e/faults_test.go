package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// Fault tests: real Caddy processes, a real redis-server they kill, pause
// and restart, loopback only, every loop bounded. Figures (recovery time,
// longest request during an outage) are logged, not asserted: speed is
// reported, behaviour is tested.

// loadSites is redisSites without per-subject quotas, for tests that
// create hundreds of sessions with one token.
func loadSites(url string) string {
	return redisSites(url, "max_pending_per_subject off", "creates_per_minute off")
}

func fastClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
}

type answered struct {
	id, capTok, nonce, text string
}

// checkInvariants reads every key of prefix straight from Redis: each has a
// TTL, and each session's stored answer is the one acknowledged for it.
func checkInvariants(t *testing.T, rs *redistest.Server, prefix string, acked map[string]string) {
	t.Helper()
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := t.Context()
	keys := checkTTLs(t, cl, prefix)
	for id, text := range acked {
		f, err := cl.Do(ctx, cl.B().Hgetall().Key(prefix+"s:{"+id+"}").Build()).AsStrMap()
		if err != nil {
			t.Fatal(err)
		}
		if f["status"] != "submitted" || !strings.Contains(f["result"], strconv.Quote(text)[1:len(strconv.Quote(text))-1]) {
			t.Errorf("acknowledged answer to %s lost or changed: status %q result %q, want %q", id, f["status"], f["result"], text)
		}
	}
	t.Logf("invariants hold over %d keys, %d acknowledged answers", keys, len(acked))
}

// checkTTLs reads every key of prefix and fails the test for one without
// a TTL; it returns how many there are.
func checkTTLs(t *testing.T, cl rueidis.Client, prefix string) int {
	t.Helper()
	ctx := t.Context()
	var cursor uint64
	keys := 0
	for {
		e, err := cl.Do(ctx, cl.B().Scan().Cursor(cursor).Match(prefix+"*").Count(500).Build()).AsScanEntry()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range e.Elements {
			keys++
			ttl, err := cl.Do(ctx, cl.B().Pttl().Key(k).Build()).AsInt64()
			if err != nil || ttl <= 0 {
				t.Errorf("key %s has no TTL (%d, %v)", k, ttl, err)
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return keys
		}
	}
}

func submitBody(nonce, text string) string {
	return fmt.Sprintf(`{"freeText":%q,"nonce":%q}`, text, nonce)
}

// TestRacingSubmitsAcrossInstances: 50 sessions, 200 concurrent answers
// each, spread over three Caddy instances sharing one Redis: exactly one
// winner per session, every loser 409, and the stored answer is the winner's.
func TestRacingSubmitsAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	var insts []*Caddy
	for range 3 {
		insts = append(insts, startCaddy(t, loadSites(rs.URL())))
	}
	client := fastClient()
	alice := token(t, "alice")
	const sessions, racers = 50, 200
	type sess struct{ id, capTok string }
	ss := make([]sess, sessions)
	for i := range ss {
		cr, capTok := createSession(t, client, insts[i%3].HTTP, alice, `{"message":"race"}`)
		ss[i] = sess{cr.SessionID, capTok}
	}
	winners := map[string]string{}
	var statusCounts sync.Map
	for i, s := range ss {
		var mu sync.Mutex
		var wg sync.WaitGroup
		var wins []string
		for j := range racers {
			wg.Go(func() {
				text := fmt.Sprintf("answer %d from racer %d", i, j)
				r := do(t, client, "POST", insts[j%3].HTTP+"/api/feedback/"+s.id+"/submit", submitBody(fmt.Sprint("n", j), text), "X-Feedback-Token", s.capTok)
				v, _ := statusCounts.LoadOrStore(r.Status, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
				switch r.Status {
				case 200:
					mu.Lock()
					wins = append(wins, text)
					mu.Unlock()
				case 409:
				default:
					t.Errorf("submit: %d %s", r.Status, r.Body)
				}
			})
		}
		wg.Wait()
		if len(wins) != 1 {
			t.Fatalf("session %d: %d winners, want exactly 1", i, len(wins))
		}
		winners[s.id] = wins[0]
		// Every instance reports the winner's answer.
		r := do(t, client, "GET", insts[(i+1)%3].HTTP+"/api/feedback/"+s.id+"/result", "", "Authorization", "Bearer "+alice)
		if !strings.Contains(r.Body, wins[0]) {
			t.Fatalf("result %s, want the winner's %q", r.Body, wins[0])
		}
	}
	statusCounts.Range(func(k, v any) bool { t.Logf("HTTP %v: %d", k, v.(*atomic.Int64).Load()); return true })
	checkInvariants(t, rs, "e2e:", winners)
}

// TestRedisKilledUnderLoad: answers stream in while Redis is killed -9 and
// restarted. Every acknowledged answer survives (AOF), none is applied
// twice, requests during the outage get 503 + Retry-After and never hang,
// and retries with the same nonce settle every session.
func TestRedisKilledUnderLoad(t *testing.T) {
	rs := redistest.Start(t)
	c := startCaddy(t, loadSites(rs.URL()))
	client := fastClient()
	alice := token(t, "alice")
	const n = 300
	work := make(chan answered, n)
	for i := range n {
		cr, capTok := createSession(t, client, c.HTTP, alice, `{"message":"load"}`)
		work <- answered{cr.SessionID, capTok, fmt.Sprint("nonce-", i), fmt.Sprint("answer ", i)}
	}
	close(work)

	var (
		mu                 sync.Mutex
		acked              = map[string]string{}
		failed             []answered
		ackCount, failures atomic.Int64
		longest            time.Duration
		killed             = make(chan struct{})
		restartedAt        time.Time
	)
	var killOnce, restartOnce sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for a := range work {
				start := time.Now()
				r := do(t, client, "POST", c.HTTP+"/api/feedback/"+a.id+"/submit", submitBody(a.nonce, a.text), "X-Feedback-Token", a.capTok)
				took := time.Since(start)
				mu.Lock()
				longest = max(longest, took)
				switch r.Status {
				case 200:
					acked[a.id] = a.text
				case 503:
					if r.Header.Get("Retry-After") == "" {
						t.Errorf("503 without Retry-After")
					}
					failed = append(failed, a)
				default:
					t.Errorf("submit during fault: %d %s", r.Status, r.Body)
				}
				mu.Unlock()
				if r.Status == 200 && ackCount.Add(1) == 100 {
					killOnce.Do(func() { rs.Kill(); close(killed) })
				}
				if r.Status == 503 && failures.Add(1) == 50 {
					restartOnce.Do(func() {
						rs.Restart(t)
						mu.Lock()
						restartedAt = time.Now()
						mu.Unlock()
					})
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("the load ended before Redis was killed")
	}
	restartOnce.Do(func() { rs.Restart(t); restartedAt = time.Now() })

	// Wait for recovery (a readiness poll, bounded), then retry every failed
	// answer with its nonce: each lands exactly once, whether or not the
	// first attempt had reached Redis before the kill.
	if !eventually(30*time.Second, func() bool { return do(t, client, "GET", c.HTTP+"/health", "").Status == 200 }) {
		t.Fatal("service did not recover after Redis came back")
	}
	recovery := time.Since(restartedAt)
	for _, a := range failed {
		r := do(t, client, "POST", c.HTTP+"/api/feedback/"+a.id+"/submit", submitBody(a.nonce, a.text), "X-Feedback-Token", a.capTok)
		if r.Status != 200 {
			t.Errorf("retry of %s with its nonce: %d %s", a.id, r.Status, r.Body)
			continue
		}
		acked[a.id] = a.text
	}
	if len(acked) != n {
		t.Fatalf("%d of %d sessions answered after recovery", len(acked), n)
	}
	t.Logf("kill -9 under load: %d sessions, %d acknowledged before/after the outage, %d failed with 503 and were retried; "+
		"health back %v after Redis answered again; longest request %v",
		n, n-len(failed), len(failed), recovery.Round(time.Millisecond), longest.Round(time.Millisecond))
	checkInvariants(t, rs, "e2e:", acked)
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// goroutines reads the Caddy process's goroutine count from its admin
// endpoint's pprof handler.
func (c *Caddy) goroutines(t *testing.T) int {
	t.Helper()
	r := do(t, http.DefaultClient, "GET", fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", c.AdminPort), "")
	m := goroutineTotal.FindStringSubmatch(r.Body)
	if m == nil {
		t.Fatalf("no goroutine count in %.200s", r.Body)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRedisPaused: with Redis frozen (SIGSTOP), requests end with 503
// within the store's deadline instead of hanging, goroutines do not pile
// up, and after SIGCONT everything works again.
func TestRedisPaused(t *testing.T) {
	rs := redistest.Start(t)
	c := startCaddy(t, redisSites(rs.URL()))
	client := fastClient()
	alice := token(t, "alice")
	cr, capTok := createSession(t, client, c.HTTP, alice, `{"message":"paused"}`)
	base := c.goroutines(t)

	if err := rs.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rs.Signal(syscall.SIGCONT) }()
	var wg sync.WaitGroup
	var longest atomic.Int64
	for i := range 40 {
		wg.Go(func() {
			start := time.Now()
			var r Response
			if i%2 == 0 {
				r = do(t, client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/status", "", "Authorization", "Bearer "+alice)
			} else {
				r = do(t, client, "POST", c.HTTP+"/api/feedback/create", `{"message":"x"}`, "Authorization", "Bearer "+alice)
			}
			if r.Status != 503 || r.Header.Get("Retry-After") == "" {
				t.Errorf("request while Redis is paused: %d %s", r.Status, r.Body)
			}
			if d := int64(time.Since(start)); d > longest.Load() {
				longest.Store(d)
			}
		})
	}
	wg.Wait()
	// Every request has ended; once the client drops its idle connections
	// the server's goroutines must return to about where they were. One
	// left per request would mean waits that outlive their requests.
	client.CloseIdleConnections()
	var during int
	if !eventually(10*time.Second, func() bool { during = c.goroutines(t); return during <= base+5 }) {
		t.Errorf("goroutines grew from %d to %d while Redis was paused", base, during)
	}
	if err := rs.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	r := do(t, client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"after the pause"}`, "X-Feedback-Token", capTok)
	if r.Status != 200 {
		t.Fatalf("submit after SIGCONT: %d %s", r.Status, r.Body)
	}
	checkInvariants(t, rs, "e2e:", map[string]string{cr.SessionID: "after the pause"})
	t.Logf("Redis paused: 40 requests all answered 503, longest %v; goroutines %d before, %d after",
		time.Duration(longest.Load()).Round(time.Millisecond), base, during)
}

// TestScriptFlushAndPubsubKill: after SCRIPT FLUSH and with the pub/sub
// connection killed, the next submit works and the result is readable.
func TestScriptFlushAndPubsubKill(t *testing.T) {
	rs := redistest.Start(t)
	c := startCaddy(t, redisSites(rs.URL()))
	client := fastClient()
	alice := token(t, "alice")
	cr, capTok := createSession(t, client, c.HTTP, alice, `{"message":"flush"}`)
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := cl.Do(ctx, cl.B().ScriptFlush().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Do(ctx, cl.B().ClientKill().TypePubsub().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if r := do(t, client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"after flush"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit after SCRIPT FLUSH: %d %s", r.Status, r.Body)
	}
	r := do(t, client, "GET", c.HTTP+"/api/feedback/"+cr.SessionID+"/result", "", "Authorization", "Bearer "+alice)
	var res struct{ Status string }
	if err := json.Unmarshal([]byte(r.Body), &res); err != nil || res.Status != "submitted" {
		t.Fatalf("result: %s", r.Body)
	}
	checkInvariants(t, rs, "e2e:", map[string]string{cr.SessionID: "after flush"})
}

// TestQuotaAcrossInstances: the per-subject cap on pending questions holds
// across instances sharing one Redis, and answers 429 with Retry-After.
func TestQuotaAcrossInstances(t *testing.T) {
	rs := redistest.Start(t)
	sites := redisSites(rs.URL(), "max_pending_per_subject 3")
	a, b := startCaddy(t, sites), startCaddy(t, sites)
	alice := token(t, "alice")
	createSession(t, a.Client, a.HTTP, alice, `{"message":"1"}`)
	createSession(t, b.Client, b.HTTP, alice, `{"message":"2"}`)
	cr, capTok := createSession(t, a.Client, a.HTTP, alice, `{"message":"3"}`)
	for _, c := range []*Caddy{a, b} {
		r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/create", `{"message":"4"}`, "Authorization", "Bearer "+alice)
		if r.Status != 429 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.Body, "quota_exceeded") {
			t.Fatalf("4th pending question: %d %s", r.Status, r.Body)
		}
	}
	if r := do(t, b.Client, "POST", b.HTTP+"/api/feedback/"+cr.SessionID+"/submit", `{"freeText":"ok"}`, "X-Feedback-Token", capTok); r.Status != 200 {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	createSession(t, b.Client, b.HTTP, alice, `{"message":"4, after one was answered"}`)
}
