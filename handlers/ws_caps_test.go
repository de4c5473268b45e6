package handlers

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	// The server registers a socket just after its handshake answer.
	deadline := time.Now().Add(5 * time.Second)
	for s.hp.OpenSockets() != limit && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := s.hp.OpenSockets(); n != limit {
		t.Fatalf("%d sockets registered, want %d", n, limit)
	}
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
}

// TestWSFloodLeavesRoomForThePage: a client that floods a question's
// socket endpoint without the link (from another loopback address) holds
// at most a few waiting slots; a flood of made-up ids holds none; the real
// page's socket still connects and is told the answer.
func TestWSFloodLeavesRoomForThePage(t *testing.T) {
	s := newHumanServer(t, HumanConfig{})
	alice := mint(t, "alice")
	id, capTok := create(t, s.svc, alice, `{"message":"flood"}`)
	flooder := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	dialFrom := func(id string) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, s.wsURL(id, ""), &websocket.DialOptions{HTTPClient: flooder})
		if c != nil {
			t.Cleanup(func() { c.CloseNow() })
		}
		return c, resp, err
	}
	var held, refused, unknown int
	for i := range 300 {
		target := id
		if i%2 == 1 {
			target = uuidUnknown
		}
		_, resp, err := dialFrom(target)
		switch {
		case err == nil:
			held++
		case resp != nil && resp.StatusCode == http.StatusNotFound:
			unknown++
		case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("flood dial: %v %v", err, resp)
		}
	}
	if held != maxPendingPerAddr || unknown != 150 || refused != 150-maxPendingPerAddr {
		t.Fatalf("flood: %d held, %d unknown (404), %d refused; want %d, 150, %d", held, unknown, refused, maxPendingPerAddr, 150-maxPendingPerAddr)
	}
	// The page, from its own address, connects while the flood holds its slots.
	c, _, err := dial(t, s.wsURL(id, ""), nil)
	if err != nil {
		t.Fatalf("the page's socket during a flood: %v", err)
	}
	sendToken(t, c, capTok)
	expectType(t, c, MsgConnectionEstablished)
}
