package redistest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of n masters (no replicas), each a Server.
type Cluster struct {
	Nodes []*Server
}

// StartCluster runs n redis-server processes with cluster mode on, joins
// them with `redis-cli --cluster create` and waits until every node reports
// cluster_state:ok. redis-cli comes with Debian's redis-server (redis-tools).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: redis-cli is not on PATH (run `make deps`): %v", err)
	}
	c := &Cluster{}
	addrs := make([]string, 0, n)
	for range n {
		s := Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	// Slots are assigned at once, but nodes learn of each other by gossip;
	// poll each node's own view until all agree the cluster is up.
	for _, a := range addrs {
		for {
			out, err := exec.CommandContext(ctx, cli, "-h", "127.0.0.1", "-p", a[strings.LastIndexByte(a, ':')+1:], "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("redistest: cluster node %s not ok: %v %s", a, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// URL names every node, in the form rueidis.ParseURL takes
// (redis://first?addr=second&addr=third); rueidis detects the cluster.
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr
	for i, s := range c.Nodes[1:] {
		if i == 0 {
			u += "?addr=" + s.Addr
		} else {
			u += "&addr=" + s.Addr
		}
	}
	return u
}
