package mcpfeedback

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
	caddy.RegisterModule(RedisStore{})
}

// StoreBackend is a session store configured in Caddy, a module in the
// namespace `http.handlers.mcp_feedback.stores`. Other stores can be added
// as modules of their own.
type StoreBackend interface {
	// PoolKey identifies the backend: handlers whose keys are equal share
	// one open store, across config reloads too.
	PoolKey() string
	// Open connects to the backend.
	Open() (store.Store, error)
}

// MemoryStore keeps sessions in this process. It is the default: nothing to
// run, but sessions are lost on restart and not shared between instances.
type MemoryStore struct {
	// MaxSessions caps the sessions held at once (pending and finished
	// within their retention); past it, creates get 503 with Retry-After.
	// A typical session takes 0.5–1 KB, one with every field at its limit
	// about 52 KB. Default: 20000; -1 means no cap.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_feedback.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// PoolKey implements StoreBackend. Configurations that share the memory
// store share its cap too: the first one's cap holds until none uses it.
func (MemoryStore) PoolKey() string { return "memory" }

// Open implements StoreBackend.
func (m MemoryStore) Open() (store.Store, error) {
	// 0 is store.DefaultMaxSessions.
	return store.NewMemoryWith(store.MemoryOptions{MaxSessions: m.MaxSessions}), nil
}

// UnmarshalCaddyfile sets up the store from
//
//	store memory {
//		max_sessions <n>|off
//	}
func (m *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "max_sessions":
			if err := oneLimit(d, &m.MaxSessions); err != nil {
				return err
			}
		default:
			return d.Errf("unknown store memory option %q (known: max_sessions)", d.Val())
		}
	}
	return nil
}

// RedisStore keeps sessions in Redis, so they survive restarts and every
// Caddy instance pointed at the same Redis serves the same sessions.
type RedisStore struct {
	// URL of the Redis server: `redis://[user:password@]host:port[/db]`, or
	// `rediss://` for TLS. Placeholders such as `{env.REDIS_URL}` are
	// resolved when the config loads, so a password stays out of the JSON.
	URL string `json:"url,omitempty"`
	// Addresses are more nodes (host:port) of the same deployment. With
	// them, or with `?addr=host:port` in the URL, a Redis Cluster is
	// detected and used; one node is enough for rueidis to find the rest,
	// more survive one being down at start-up.
	Addresses []string `json:"addresses,omitempty"`
	// KeyPrefix starts every key and channel name. Default: `mcpfb:`.
	KeyPrefix string `json:"key_prefix,omitempty"`
	// TLSCAFile is a PEM file of the CA(s) that sign a `rediss://` server's
	// certificate, for a managed Redis with its own CA; without it the
	// system's roots verify. Verification is never turned off
	// (`skip_verify` in the URL is refused).
	TLSCAFile string `json:"tls_ca_file,omitempty"`
	// WaitReplicas, when above zero, confirms an answer to the person only
	// once that many replicas hold it (Redis WAIT), so a failover right
	// after "saved" cannot lose it; when the replicas do not confirm in
	// wait_timeout the person gets 503 and the page's retry (same nonce)
	// either finds the answer or stores it again. Default: 0 (off).
	WaitReplicas int `json:"wait_replicas,omitempty"`
	// WaitTimeout bounds that confirmation. Default: 1s.
	WaitTimeout caddy.Duration `json:"wait_timeout,omitempty"`

	resolved string
	rootCAs  *x509.CertPool
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_feedback.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// Provision resolves placeholders and checks the URL.
func (r *RedisStore) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	r.resolved = caddy.NewReplacer().ReplaceKnown(r.URL, "")
	if r.resolved == "" {
		return fmt.Errorf("store redis: a URL is required (e.g. redis://127.0.0.1:6379/0)")
	}
	u, err := url.Parse(r.resolved)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		return fmt.Errorf("store redis: %q is not a redis://, rediss:// or unix:// URL", redact(r.resolved))
	}
	if len(r.Addresses) > 0 {
		q := u.Query()
		for _, a := range r.Addresses {
			a = caddy.NewReplacer().ReplaceKnown(a, "")
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("store redis: address %q is not host:port", a)
			}
			q.Add("addr", a)
		}
		u.RawQuery = q.Encode()
		r.resolved = u.String()
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = store.DefaultKeyPrefix
	}
	if r.TLSCAFile != "" {
		if u.Scheme != "rediss" {
			return fmt.Errorf("store redis: tls_ca_file needs a rediss:// URL, not %s://", u.Scheme)
		}
		pem, err := os.ReadFile(caddy.NewReplacer().ReplaceKnown(r.TLSCAFile, ""))
		if err != nil {
			return fmt.Errorf("store redis: tls_ca_file: %w", err)
		}
		r.rootCAs = x509.NewCertPool()
		if !r.rootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("store redis: tls_ca_file %s holds no PEM certificate", r.TLSCAFile)
		}
	}
	if r.WaitReplicas < 0 {
		return fmt.Errorf("store redis: wait_replicas must be 0 (off) or more, got %d", r.WaitReplicas)
	}
	return nil
}

// PoolKey implements StoreBackend.
func (r *RedisStore) PoolKey() string {
	return fmt.Sprintf("redis|%s|%s|%s|%d|%d", r.resolved, r.KeyPrefix, r.TLSCAFile, r.WaitReplicas, r.WaitTimeout)
}

// Open implements StoreBackend. A Redis that does not answer at start-up
// does not refuse the configuration (Caddy may be the front door of many
// sites): the store answers 503 until Redis answers, and then works
// without a reload. A URL that cannot work (bad syntax) still fails.
func (r *RedisStore) Open() (store.Store, error) {
	open := func() (store.Store, error) {
		return store.NewRedis(store.RedisOptions{URL: r.resolved, KeyPrefix: r.KeyPrefix, RootCAs: r.rootCAs,
			WaitReplicas: r.WaitReplicas, WaitTimeout: time.Duration(r.WaitTimeout)})
	}
	st, err := open()
	if err == nil {
		return st, nil
	}
	where := redact(r.resolved)
	if !errors.Is(err, store.ErrUnavailable) {
		return nil, fmt.Errorf("store redis %s: %w", where, err)
	}
	log := r.logger
	if log == nil {
		log = zap.NewNop()
	}
	log.Warn("redis is not reachable; this module answers 503 until it is, the rest of the server runs", zap.String("redis", where), zap.Error(err))
	return store.OpenDeferred(open, err, func(err error) {
		if err == nil {
			log.Info("redis is reachable: the session store is up", zap.String("redis", where))
			return
		}
		log.Debug("redis still not reachable", zap.String("redis", where), zap.Error(err))
	}), nil
}

// UnmarshalCaddyfile sets up the store from
//
//	store redis <url> [<host:port>...] {
//		key_prefix <prefix>
//		tls_ca_file <pem file>
//		wait_replicas <n>
//		wait_timeout <duration>
//	}
func (r *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store name
	if !d.NextArg() {
		return d.Errf("store redis needs a URL, e.g. `store redis {env.REDIS_URL}`")
	}
	r.URL = d.Val()
	r.Addresses = d.RemainingArgs()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "key_prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			r.KeyPrefix = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "tls_ca_file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			r.TLSCAFile = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "wait_replicas":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("wait_replicas must be a whole number ≥ 0, got %q", d.Val())
			}
			r.WaitReplicas = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "wait_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("wait_timeout must be a positive duration such as 500ms, got %q", d.Val())
			}
			r.WaitTimeout = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown store redis option %q (known: key_prefix, tls_ca_file, wait_replicas, wait_timeout)", d.Val())
		}
	}
	return nil
}

// redact hides a password in a URL for error messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Interface guards
var (
	_ StoreBackend          = MemoryStore{}
	_ StoreBackend          = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
