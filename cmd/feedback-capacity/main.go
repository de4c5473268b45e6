// Command feedback-capacity simulates N Caddy instances sharing one Redis
// (or a 3-master Redis Cluster) and reports what each question costs Redis
// and every instance: Redis CPU, bytes Redis sends, change announcements
// each instance receives, and answer → waiter latency across instances.
//
// Each "instance" is a store.Redis with its own connections, exactly what
// one Caddy process opens; the HTTP layer is left out because it does not
// touch Redis beyond these calls. Questions are asked at a fixed rate,
// round-robin over the instances; a share of them has a waiter (Watch +
// re-read, as a waiting MCP call or WebSocket does) on another instance;
// each is answered from a third instance a fixed delay after it was asked.
//
//	go run ./cmd/feedback-capacity                          # N = 1,3,10,30; standalone and cluster
//	go run ./cmd/feedback-capacity -instances 10 -rate 500 -duration 10s -topology standalone
//
// Every loop is bounded (rate × duration questions); servers bind 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	osexec "os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

var (
	instancesFlag = flag.String("instances", "1,3,10,30", "instance counts to simulate")
	rate          = flag.Int("rate", 300, "questions asked per second (all instances together)")
	duration      = flag.Duration("duration", 5*time.Second, "how long questions are asked at each point")
	heldShare     = flag.Float64("held", 0.5, "share of questions with a waiter on another instance")
	answerAfter   = flag.Duration("answer-after", 200*time.Millisecond, "delay between asking and answering each question")
	topology      = flag.String("topology", "standalone,cluster", "standalone (one primary) and/or cluster (3 masters)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "feedback-capacity:", err)
		os.Exit(1)
	}
}

// point is one measured configuration.
type point struct {
	topology          string
	instances         int
	questions         int
	cpuPerQuestion    time.Duration // Redis CPU (user+sys, all nodes)
	bytesPerQuestion  float64       // Redis bytes out, all nodes
	receivedPerInst   float64       // announcements received per instance per question
	p50, p99          time.Duration // answer → waiter
	waiters, achieved int
}

func run() error {
	var counts []int
	for _, f := range strings.Split(*instancesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 100 {
			return fmt.Errorf("bad -instances %q (1–100 each)", *instancesFlag)
		}
		counts = append(counts, n)
	}
	if *rate < 1 || *rate > 5000 || *duration <= 0 || *duration > time.Minute {
		return errors.New("-rate must be 1–5000 and -duration at most 1m")
	}
	dir, err := os.MkdirTemp("", "feedback-capacity-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var points []point
	for _, topo := range strings.Split(*topology, ",") {
		for _, n := range counts {
			var (
				url   string
				nodes []string
				stop  func()
			)
			switch topo {
			case "standalone":
				s, err := redistest.StartIn(fmt.Sprintf("%s/%s-%d", dir, topo, n))
				if err != nil {
					return err
				}
				url, nodes, stop = s.URL(), []string{s.Addr}, s.Kill
			case "cluster":
				c, err := redistest.StartClusterIn(fmt.Sprintf("%s/%s-%d", dir, topo, n), 3)
				if err != nil {
					return err
				}
				url, stop = c.URL(), c.Kill
				for _, s := range c.Nodes {
					nodes = append(nodes, s.Addr)
				}
			default:
				return fmt.Errorf("unknown -topology %q", topo)
			}
			p, err := measure(topo, url, nodes, n)
			stop()
			if err != nil {
				return fmt.Errorf("%s, %d instances: %w", topo, n, err)
			}
			fmt.Fprintf(os.Stderr, "%s N=%d done\n", topo, n)
			points = append(points, p)
		}
	}
	fmt.Printf("Capacity simulation: %d questions/s for %v per point, %.0f%% with a waiter on another instance, answered %v after asking; Redis %s on this machine (%d questions per point).\n\n",
		*rate, *duration, *heldShare*100, *answerAfter, redisVersion(), *rate*int(duration.Seconds()))
	fmt.Println("| Redis | instances | Redis CPU per question | Redis bytes out per question | announcements received per instance per question | answer → waiter p50 / p99 |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, p := range points {
		fmt.Printf("| %s | %d | %.0f µs | %.0f B | %.2f | %v / %v |\n", p.topology, p.instances,
			float64(p.cpuPerQuestion)/float64(time.Microsecond), p.bytesPerQuestion, p.receivedPerInst,
			p.p50.Round(10*time.Microsecond), p.p99.Round(10*time.Microsecond))
	}
	return nil
}

func redisVersion() string {
	out, err := exec("redis-server", "--version")
	if err != nil {
		return "?"
	}
	f := strings.Fields(out)
	for _, x := range f {
		if v, ok := strings.CutPrefix(x, "v="); ok {
			return v
		}
	}
	return "?"
}

func measure(topo, url string, nodes []string, n int) (point, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	insts := make([]*store.Redis, n)
	for i := range insts {
		r, err := store.NewRedis(store.RedisOptions{URL: url, KeyPrefix: "cap:"})
		if err != nil {
			return point{}, err
		}
		defer r.Close()
		insts[i] = r
	}
	// Let every subscription settle before counting.
	for _, r := range insts {
		if err := r.Ping(ctx); err != nil {
			return point{}, err
		}
	}
	time.Sleep(200 * time.Millisecond) // settle subscriptions; not synchronisation of results
	before, err := nodeStats(ctx, nodes)
	if err != nil {
		return point{}, err
	}
	recvBefore := make([]int64, n)
	for i, r := range insts {
		recvBefore[i] = r.EventsReceived()
	}

	total := *rate * int(duration.Seconds())
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		latencies []time.Duration
		errs      []error
		waiters   int
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	for i := range total {
		<-tick.C
		asker, waiterAt, answerer := insts[i%n], insts[(i+1)%n], insts[(i+2)%n]
		held := rand.Float64() < *heldShare
		if held {
			waiters++
		}
		wg.Go(func() {
			s := storetest.NewSession(time.Minute)
			if err := asker.Create(ctx, s, 2*time.Minute); err != nil {
				fail(err)
				return
			}
			var answered chan time.Time
			if held {
				answered = make(chan time.Time, 1)
				wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
				ch := waiterAt.Watch(wctx, s.ID)
				go func() {
					defer wcancel()
					for range ch {
						got, err := waiterAt.Get(wctx, s.ID)
						if err == nil && got.Status == store.StatusSubmitted {
							answered <- time.Now()
							return
						}
					}
				}()
			}
			time.Sleep(*answerAfter) // the person's think time, part of the workload
			t0 := time.Now()
			if _, err := answerer.Submit(ctx, s.ID, store.Answer{FreeText: "ok", Nonce: "n"}); err != nil {
				fail(err)
				return
			}
			if held {
				select {
				case t1 := <-answered:
					mu.Lock()
					latencies = append(latencies, t1.Sub(t0))
					mu.Unlock()
				case <-time.After(30 * time.Second):
					fail(fmt.Errorf("waiter of %s never heard the answer", s.ID))
				}
			}
		})
	}
	wg.Wait()
	after, err := nodeStats(ctx, nodes)
	if err != nil {
		return point{}, err
	}
	if len(errs) > 0 {
		return point{}, fmt.Errorf("%d errors, first: %w", len(errs), errs[0])
	}
	var recv int64
	for i, r := range insts {
		recv += r.EventsReceived() - recvBefore[i]
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	q := float64(total)
	return point{
		topology: topo, instances: n, questions: total, waiters: waiters, achieved: len(latencies),
		cpuPerQuestion:   time.Duration((after.cpu - before.cpu) / q * float64(time.Second)),
		bytesPerQuestion: float64(after.out-before.out) / q,
		receivedPerInst:  float64(recv) / float64(n) / q,
		p50:              pct(0.50), p99: pct(0.99),
	}, nil
}

type stats struct {
	cpu float64 // seconds
	out int64   // bytes
}

// nodeStats sums used_cpu_user+sys and total_net_output_bytes over nodes.
func nodeStats(ctx context.Context, nodes []string) (stats, error) {
	var st stats
	for _, addr := range nodes {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
		if err != nil {
			return st, err
		}
		info, err := c.Do(ctx, c.B().Info().Section("everything").Build()).ToString()
		c.Close()
		if err != nil {
			return st, err
		}
		for _, line := range strings.Split(info, "\r\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch k {
			case "used_cpu_user", "used_cpu_sys":
				f, _ := strconv.ParseFloat(v, 64)
				st.cpu += f
			case "total_net_output_bytes":
				b, _ := strconv.ParseInt(v, 10, 64)
				st.out += b
			}
		}
	}
	return st, nil
}

func exec(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).Output()
	return string(out), err
}
