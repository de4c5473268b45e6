package redistest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
)

// MasterSet is the name the sentinels of a SentinelSet monitor.
const MasterSet = "mymaster"

// SentinelSet is a primary, one replica and three sentinels, the smallest
// set that fails over by itself: the sentinels agree (quorum 2) that the
// primary is down after 1 s and promote the replica.
type SentinelSet struct {
	Primary, Replica *Server
	Sentinels        []string // host:port of each sentinel
	procs            []*harness.Process
}

// StartSentinelSet runs a SentinelSet for the duration of t. extraArgs go
// to both data nodes (e.g. "--appendfsync", "always").
func StartSentinelSet(t testing.TB, extraArgs ...string) *SentinelSet {
	t.Helper()
	dir := t.TempDir()
	s := &SentinelSet{}
	t.Cleanup(s.Kill)
	var err error
	// No 5 s wait before the first (diskless) sync: the test starts at once.
	extraArgs = append([]string{"--repl-diskless-sync-delay", "0"}, extraArgs...)
	if s.Primary, err = StartIn(filepath.Join(dir, "primary"), extraArgs...); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(s.Primary.Addr)
	if s.Replica, err = StartIn(filepath.Join(dir, "replica"), append([]string{"--replicaof", host, port}, extraArgs...)...); err != nil {
		t.Fatal(err)
	}
	// A replica that has not finished its first sync has nothing to fail
	// over to; production replicas are in sync.
	if err := harness.Poll(readyTimeout, probeInterval, nil, func() bool {
		out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strings.Split(s.Replica.Addr, ":")[1], "INFO", "replication").Output()
		return err == nil && strings.Contains(string(out), "master_link_status:up")
	}); err != nil {
		t.Fatalf("the replica never synced: %v", err)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		sdir := filepath.Join(dir, fmt.Sprintf("sentinel%d", i))
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(sdir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s 2\n"+
			"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			p, sdir, MasterSet, host, port, MasterSet, MasterSet, MasterSet)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, conf, "--sentinel")
		cmd.Dir = sdir
		proc, err := harness.StartProcess(cmd, filepath.Join(sdir, "sentinel.log"))
		if err != nil {
			t.Fatal(err)
		}
		s.procs = append(s.procs, proc)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		if err := harness.Poll(readyTimeout, probeInterval, proc.Done(), func() bool { return ping(addr) == nil }); err != nil {
			t.Fatalf("sentinel on %s: %v", addr, err)
		}
		s.Sentinels = append(s.Sentinels, addr)
	}
	// A failover needs a majority of sentinels that know each other (they
	// meet through the primary every 2 s) and the replica.
	for _, addr := range s.Sentinels {
		if err := harness.Poll(30*time.Second, probeInterval, nil, func() bool {
			out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strings.Split(addr, ":")[1], "SENTINEL", "master", MasterSet).Output()
			f := strings.Fields(string(out))
			field := func(name string) string {
				for i := 0; i+1 < len(f); i++ {
					if f[i] == name {
						return f[i+1]
					}
				}
				return ""
			}
			return err == nil && field("num-other-sentinels") == "2" && field("num-slaves") == "1"
		}); err != nil {
			t.Fatalf("sentinel %s never saw the others and the replica: %v", addr, err)
		}
	}
	return s
}

// URL is the store's URL for the set: the sentinels, and the master set.
func (s *SentinelSet) URL() string {
	q := url.Values{"master_set": {MasterSet}}
	for _, a := range s.Sentinels[1:] {
		q.Add("addr", a)
	}
	return "redis://" + s.Sentinels[0] + "/0?" + q.Encode()
}

// PrimaryAddr asks the first sentinel which node is the primary now.
func (s *SentinelSet) PrimaryAddr() (string, error) {
	out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strings.Split(s.Sentinels[0], ":")[1],
		"SENTINEL", "get-master-addr-by-name", MasterSet).Output()
	if err != nil {
		return "", fmt.Errorf("asking the sentinel: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", fmt.Errorf("sentinel answered %q", out)
	}
	return net.JoinHostPort(f[0], f[1]), nil
}

// Kill stops every process of the set.
func (s *SentinelSet) Kill() {
	for _, p := range s.procs {
		p.Kill()
	}
	for _, n := range []*Server{s.Primary, s.Replica} {
		if n != nil {
			n.Kill()
		}
	}
}

// failoverWait bounds how long a test waits for a failover.
const failoverWait = 60 * time.Second

// FailoverWait is how long a test should wait for the sentinels to promote
// the replica.
func FailoverWait() time.Duration { return failoverWait }
