package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
)

const clusterTimeout = 60 * time.Second

// Cluster is a Redis Cluster of n masters (no replicas), each a Server.
type Cluster struct {
	Nodes []*Server
}

// StartCluster runs a cluster (see StartClusterIn) for the duration of t,
// in t's temporary directory.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := StartClusterIn(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}

// StartClusterIn runs n redis-server processes with cluster mode on, each
// in a directory under dir, joins them with `redis-cli --cluster create` and
// waits until every node reports cluster_state:ok. redis-cli comes with
// Debian's redis-server (redis-tools). On failure every node is killed.
func StartClusterIn(dir string, n int) (*Cluster, error) {
	c := &Cluster{}
	if err := c.start(dir, n); err != nil {
		c.Kill()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(dir string, n int) error {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("redistest: redis-cli is not on PATH (run `make deps`): %w", err)
	}
	addrs := make([]string, 0, n)
	for i := range n {
		s, err := StartIn(filepath.Join(dir, fmt.Sprintf("node%d", i)), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	deadline := time.Now().Add(clusterTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redistest: redis-cli --cluster create: %w\n%s", err, out)
	}
	// Slots are assigned at once, but nodes learn of each other by gossip;
	// poll each node's own view until all agree the cluster is up.
	for _, a := range addrs {
		var out []byte
		var last error
		err := harness.Poll(time.Until(deadline), 50*time.Millisecond, nil, func() bool {
			out, last = exec.CommandContext(ctx, cli, "-h", "127.0.0.1", "-p", a[strings.LastIndexByte(a, ':')+1:], "cluster", "info").Output()
			return last == nil && strings.Contains(string(out), "cluster_state:ok")
		})
		if err != nil {
			return fmt.Errorf("redistest: cluster node %s not ok: %w (last: %v %s)", a, err, last, out)
		}
	}
	return nil
}

// Kill kills every node.
func (c *Cluster) Kill() {
	for _, s := range c.Nodes {
		s.Kill()
	}
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
