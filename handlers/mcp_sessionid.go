package handlers

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Streamable HTTP session ids are signed: `fb1.<nonce>.<mac>`, the mac an
// HMAC of the nonce and the owner's iss and sub under a key derived from
// the site's secret (MCPConfig.SessionKey). So any instance behind a load
// balancer recognises a session another instance opened, for the same
// identity only, while a made-up id, or one used with another identity's
// token, is refused with 404 and creates nothing. A session ended here
// (DELETE, or dropped when idle) is remembered here as terminated; another
// instance accepts its id from the same owner until it restarts — which
// gives that owner nothing it could not get with a new initialize.

const (
	sessionIDPrefix = "fb1."
	// terminatedKeep is how long an ended session id is remembered.
	terminatedKeep = 24 * time.Hour
)

var errBadSessionID = errors.New("unknown MCP session id")

// sessionIDs is the mcp-go resolver: a manager per request, which knows
// who is asking.
type sessionIDs struct{ m *MCP }

func (r sessionIDs) ResolveSessionIdManager(req *http.Request) server.SessionIdManager {
	var rq *mcpRequest
	if req != nil {
		rq = requestFrom(req.Context())
	}
	return &sessionIDManager{m: r.m, rq: rq}
}

type sessionIDManager struct {
	m  *MCP
	rq *mcpRequest // nil outside a request
}

// Generate mints the id of a new session for the requesting owner.
func (g *sessionIDManager) Generate() string {
	if g.rq == nil || len(g.rq.cfg.SessionKey) == 0 {
		return "mcp-session-" + rand.Text() // no key: recognised on this instance only
	}
	nonce := rand.Text()
	return sessionIDPrefix + nonce + "." + sessionMAC(g.rq.cfg.SessionKey, nonce, OwnerOf(g.rq.claims))
}

// Validate accepts an id this instance knows, or a signed one of this
// owner that has not ended here.
func (g *sessionIDManager) Validate(id string) (bool, error) {
	if g.m.terminated.has(id) {
		return true, nil
	}
	if g.m.session(id) != nil {
		return false, nil
	}
	if g.rq == nil || !signedFor(g.rq.cfg.SessionKey, id, OwnerOf(g.rq.claims)) {
		return false, errBadSessionID
	}
	return false, nil
}

// Terminate remembers an ended session id.
func (g *sessionIDManager) Terminate(id string) (bool, error) {
	g.m.terminated.add(id)
	return false, nil
}

func sessionMAC(key []byte, nonce string, o store.Owner) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(nonce + "\x00" + o.Issuer + "\x00" + o.Subject))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// signedFor reports whether id is a session id minted for o under key.
func signedFor(key []byte, id string, o store.Owner) bool {
	rest, ok := strings.CutPrefix(id, sessionIDPrefix)
	if len(key) == 0 || !ok {
		return false
	}
	nonce, mac, ok := strings.Cut(rest, ".")
	return ok && hmac.Equal([]byte(mac), []byte(sessionMAC(key, nonce, o)))
}

// endedIDs remembers ended session ids for terminatedKeep.
type endedIDs struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

func (e *endedIDs) add(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ids == nil {
		e.ids = map[string]time.Time{}
	}
	e.ids[id] = time.Now()
}

func (e *endedIDs) has(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.ids[id]
	return ok
}

// prune forgets ids ended longer ago than terminatedKeep.
func (e *endedIDs) prune() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, at := range e.ids {
		if time.Since(at) > terminatedKeep {
			delete(e.ids, id)
		}
	}
}
