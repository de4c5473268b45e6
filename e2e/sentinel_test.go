package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// TestSentinelFailover: with `store redis` pointed at three sentinels, the
// primary is killed (-9) under a load of asks and answers; the sentinels
// promote the replica and the module carries on by itself on the new
// primary. Replication is asynchronous, so an answer acknowledged in the
// last moment before the kill may be missing on the new primary: the test
// counts those (and the README says so); it asserts that none is applied
// twice or changed, that every key has a TTL, and that service comes back.
// With `wait_replicas 1` an answer is acknowledged only once the replica
// holds it, and then not one acknowledged answer may be missing.
func TestSentinelFailover(t *testing.T) {
	t.Run("async", func(t *testing.T) { sentinelFailover(t, false) })
	t.Run("wait_replicas=1", func(t *testing.T) { sentinelFailover(t, true) })
}

func sentinelFailover(t *testing.T, waitReplica bool) {
	set := redistest.StartSentinelSet(t, "--appendfsync", "always")
	site := redisSites(set.URL(), "max_pending_per_subject off", "creates_per_minute off")
	if waitReplica {
		site = strings.Replace(site, "key_prefix e2e:", "key_prefix e2e:\n\t\t\twait_replicas 1", 1)
	}
	c := startCaddy(t, site)
	client := fastClient()
	alice := token(t, "alice")
	flow(t, client, c.HTTP)

	var (
		mu    sync.Mutex
		acked = map[string]string{} // session → acknowledged answer
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() { // bounded: at most 20,000 pairs, and until stop
		defer close(done)
		for i := range 20000 {
			select {
			case <-stop:
				return
			default:
			}
			r := do(t, client, "POST", c.HTTP+"/api/feedback/create", `{"message":"failover?"}`, "Authorization", "Bearer "+alice)
			if r.Status != 201 {
				// The store is failing over: pace the retries, so the
				// bound counts time rather than a burst of 503s.
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			var cr created
			if err := json.Unmarshal([]byte(r.Body), &cr); err != nil {
				continue
			}
			_, capTok, _ := strings.Cut(cr.FeedbackURL, "#t=")
			text := "answer " + strconv.Itoa(i)
			r = do(t, client, "POST", c.HTTP+"/api/feedback/"+cr.SessionID+"/submit", submitBody("n"+strconv.Itoa(i), text), "X-Feedback-Token", capTok)
			if r.Status == 200 {
				mu.Lock()
				acked[cr.SessionID] = text
				mu.Unlock()
			}
		}
	}()
	// Some answers before the kill.
	if !eventually(30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 50 }) {
		t.Fatal("no answers acknowledged before the failover")
	}
	killed := time.Now()
	set.Primary.Kill()
	var recovered time.Duration
	if !eventually(redistest.FailoverWait(), func() bool {
		r := do(t, client, "POST", c.HTTP+"/api/feedback/create", `{"message":"after failover"}`, "Authorization", "Bearer "+alice)
		if r.Status == 201 {
			recovered = time.Since(killed)
		}
		return r.Status == 201
	}) {
		t.Fatal("no service through the new primary")
	}
	primary, err := set.PrimaryAddr()
	if err != nil || primary != set.Replica.Addr {
		t.Fatalf("the sentinels name %q as primary (%v), want the replica %s", primary, err, set.Replica.Addr)
	}
	if waitReplica {
		// The promoted replica has no replica of its own, so no answer can
		// be confirmed until the old primary is back: the sentinels make
		// it a replica of the new one. (Hence: wait_replicas N wants N+1
		// replicas to keep taking answers while one node is down.)
		set.Primary.Restart(t)
	}
	// Keep the load on the new primary for a moment, then stop it.
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	if !eventually(30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= before+50 }) {
		t.Fatal("answers are not acknowledged on the new primary")
	}
	close(stop)
	<-done

	// Read the new primary directly: every key has a TTL; every
	// acknowledged answer is there with its own text, or missing (lost with
	// the old primary), never another.
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{set.Replica.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := t.Context()
	keys := checkTTLs(t, cl, "e2e:")
	lost := 0
	for id, text := range acked {
		f, err := cl.Do(ctx, cl.B().Hgetall().Key("e2e:s:{"+id+"}").Build()).AsStrMap()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(f) == 0 || f["status"] == "pending":
			lost++
		case f["status"] != "submitted" || !strings.Contains(f["result"], fmt.Sprintf("%q", text)[1:len(text)+1]):
			t.Errorf("acknowledged answer to %s changed: %v, want %q", id, f, text)
		}
	}
	if waitReplica && lost > 0 {
		t.Errorf("%d answers acknowledged with wait_replicas 1 are missing on the promoted replica", lost)
	}
	t.Logf("failover: service back %v after the primary was killed; %d answers acknowledged, %d of them lost with the old primary; %d keys, all with a TTL",
		recovered.Round(10*time.Millisecond), len(acked), lost, keys)
}
