package handlers

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// TestWSCapsUnderFlood: forty concurrent owner connections from one
// subject get exactly the subject cap; the rest are refused with 429.
func TestWSCapsUnderFlood(t *testing.T) {
	const limit = 5
	s := newHumanServer(t, HumanConfig{MaxSocketsPerSession: 100, MaxSocketsPerSubject: limit})
	alice := mint(t, "alice")
	owner := http.Header{"Authorization": {"Bearer " + alice}}
	ids := make([]string, 8)
	for i := range ids {
		ids[i], _ = create(t, s.svc, alice, `{"message":"flood"}`)
	}
	var opened, refused atomic.Int32
	var mu sync.Mutex
	var conns []*websocket.Conn
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			c, resp, err := dial(t, s.wsURL(ids[i%len(ids)], ""), owner)
			switch {
			case err == nil:
				opened.Add(1)
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
				refused.Add(1)
			default:
				t.Errorf("dial: %v %v", err, resp)
			}
		})
	}
	wg.Wait()
	if opened.Load() != limit || refused.Load() != 40-limit {
		t.Fatalf("%d opened, %d refused; want %d and %d", opened.Load(), refused.Load(), limit, 40-limit)
	}
	if n := s.hp.OpenSockets(); n != limit {
		t.Fatalf("%d sockets registered, want %d", n, limit)
	}
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
}
