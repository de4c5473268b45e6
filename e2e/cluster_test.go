package e2e

import (
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
)

// TestRedisClusterStore: the module against a real three-master Redis
// Cluster, configured the way an operator would, by listing the nodes.
func TestRedisClusterStore(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	addrs := make([]string, len(cl.Nodes))
	for i, n := range cl.Nodes {
		addrs[i] = n.Addr
	}
	c := startCaddy(t, `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		store redis redis://`+addrs[0]+` `+strings.Join(addrs[1:], " ")+`
	}
	respond "next handler" 200
}
`)
	flow(t, c.Client, c.HTTP)
}
