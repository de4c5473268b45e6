package login

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Cookie names. Browsers accept a __Host- cookie only when it is Secure,
// has Path=/ and no Domain, so it cannot be set by a sibling subdomain nor
// read over plain http; a plain-http loopback site (tests) drops the
// prefix, as browsers would refuse it there.
const (
	sessionCookie = "mcpfb_session"
	flowCookie    = "mcpfb_login"
	hostPrefix    = "__Host-"
)

// randomToken returns 32 random bytes, base64url: the session id, the
// state, the nonce and the browser binding are all such tokens.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// tokenLen is the length of a randomToken.
const tokenLen = 43

// wellFormed reports whether v looks like a randomToken, so that garbage
// never reaches the store as part of a key.
func wellFormed(v string) bool {
	if len(v) != tokenLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil
}

// digest is the hex SHA-256 of a token: what the store keys records by, so
// that a leaked copy of the store holds no usable session id or state.
func digest(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

// Sessions are server-side sign-in sessions: an opaque random id in an
// HttpOnly cookie, the record in the shared store under the id's SHA-256
// with the session's TTL. Every instance sharing the store knows a
// session, ending it ends it everywhere, and the cookie holds nothing to
// decrypt or forge.
type Sessions struct {
	kv     store.KV
	ttl    time.Duration
	now    func() time.Time
	name   string // cookie name, with the __Host- prefix when secure
	secure bool
}

// NewSessions keeps sessions in kv for ttl. plainHTTP is for a plain-http
// loopback site only: the cookie loses Secure and the __Host- prefix.
func NewSessions(kv store.KV, ttl time.Duration, plainHTTP bool, now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	s := &Sessions{kv: kv, ttl: ttl, now: now, name: hostPrefix + sessionCookie, secure: true}
	if plainHTTP {
		s.name, s.secure = sessionCookie, false
	}
	return s
}

// sessionRecord is what the store keeps for a session.
type sessionRecord struct {
	Person  identity.Person `json:"person"`
	Expires int64           `json:"exp"` // unix seconds
}

func sessionKey(id string) string { return "login:session:" + digest(id) }

// Start creates a session for p and sets its cookie on w. A session r
// already had ends: every sign-in gets a fresh id (no session fixation).
func (s *Sessions) Start(w http.ResponseWriter, r *http.Request, p identity.Person) error {
	ctx := r.Context()
	if old, ok := s.id(r); ok {
		if err := s.kv.Delete(ctx, sessionKey(old)); err != nil {
			return fmt.Errorf("ending the previous session: %w", err)
		}
	}
	id := randomToken()
	exp := s.now().Add(s.ttl)
	b, err := json.Marshal(sessionRecord{Person: p, Expires: exp.Unix()})
	if err != nil {
		return fmt.Errorf("encoding session: %w", err)
	}
	if err := s.kv.Put(ctx, sessionKey(id), b, s.ttl); err != nil {
		return fmt.Errorf("storing session: %w", err)
	}
	http.SetCookie(w, s.cookie(id, int(s.ttl/time.Second)))
	return nil
}

func (s *Sessions) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: s.name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode}
}

// Person returns the person of r's session: identity.ErrNotSignedIn
// without a cookie, with a malformed, unknown or expired one; another error
// when the store cannot be read.
func (s *Sessions) Person(r *http.Request) (identity.Person, error) {
	id, ok := s.id(r)
	if !ok {
		return identity.Person{}, identity.ErrNotSignedIn
	}
	b, err := s.kv.Load(r.Context(), sessionKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return identity.Person{}, identity.ErrNotSignedIn
	}
	if err != nil {
		return identity.Person{}, fmt.Errorf("reading session: %w", err)
	}
	var rec sessionRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Person.ID == "" {
		return identity.Person{}, identity.ErrNotSignedIn
	}
	// The store's TTL ends the record too; this holds when a store
	// keeps it a little longer.
	if !s.now().Before(time.Unix(rec.Expires, 0)) {
		return identity.Person{}, identity.ErrNotSignedIn
	}
	return rec.Person, nil
}

func (s *Sessions) id(r *http.Request) (string, bool) {
	c, err := r.Cookie(s.name)
	if err != nil || !wellFormed(c.Value) {
		return "", false
	}
	return c.Value, true
}

// End deletes r's session from the store, for every instance, and clears
// the cookie on w.
func (s *Sessions) End(w http.ResponseWriter, r *http.Request) error {
	http.SetCookie(w, s.cookie("", -1))
	id, ok := s.id(r)
	if !ok {
		return nil
	}
	if err := s.kv.Delete(r.Context(), sessionKey(id)); err != nil {
		return fmt.Errorf("ending session: %w", err)
	}
	return nil
}
