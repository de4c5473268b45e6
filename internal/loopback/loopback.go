// Package loopback says whether a host names this machine, for the places
// that allow plain http or a local address only there (redirect URIs,
// identity-provider and push test switches, public_url).
package loopback

import (
	"net"
	"strings"
)

// Host reports whether host (no port, no brackets) is "localhost" in any
// case or a loopback IP address (127.0.0.0/8, ::1).
func Host(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
