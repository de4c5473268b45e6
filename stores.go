package mcpfeedback

import (
	"errors"
	"fmt"
	"net"
	"net/url"

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

	resolved string
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
	return nil
}

// PoolKey implements StoreBackend.
func (r *RedisStore) PoolKey() string { return "redis|" + r.resolved + "|" + r.KeyPrefix }

// Open implements StoreBackend. A Redis that does not answer at start-up
// does not refuse the configuration (Caddy may be the front door of many
// sites): the store answers 503 until Redis answers, and then works
// without a reload. A URL that cannot work (bad syntax) still fails.
func (r *RedisStore) Open() (store.Store, error) {
	open := func() (store.Store, error) {
		return store.NewRedis(store.RedisOptions{URL: r.resolved, KeyPrefix: r.KeyPrefix})
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
		default:
			return d.Errf("unknown store redis option %q (known: key_prefix)", d.Val())
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
