package auth

// JWKS mode: access tokens from an identity provider (Entra ID, Keycloak,
// Auth0, Authentik, …) verified against the provider's published keys.
//
// The keys are fetched and cached by github.com/MicahParks/jwkset, the JWK
// Set storage that keyfunc/v3 is built on: a background refresh (hourly by
// default) that ends with the context it was given, and a refetch when a
// token names a key id the cache does not hold, at most once a minute. The
// keyfunc on top of it is ours, because keyfunc's takes the algorithm from
// the token whenever a key has no "alg" member (Entra ID publishes none):
// here the algorithm always comes from the key (keyAlg), and a token that
// names another is refused before any signature work.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/loopback"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Defaults of JWKSOptions.
const (
	DefaultJWKSRefresh         = time.Hour
	DefaultJWKSUnknownKIDEvery = time.Minute
	DefaultJWKSTimeout         = 10 * time.Second
	// DefaultJWKSMaxBytes caps a JWKS or discovery document. Real ones are a
	// few KiB (Entra ID's JWKS is about 10 KiB).
	DefaultJWKSMaxBytes = 512 << 10
)

// AsymmetricAlgs are the algorithms JWKS mode accepts. HMAC (HS*) and none
// are never among them.
var AsymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// JWKSOptions turn on JWKS mode: tokens signed by an identity provider,
// checked against its published keys. Set URL or OIDCIssuer, not both.
type JWKSOptions struct {
	// URL is the JWKS document (https).
	URL string
	// OIDCIssuer is an OpenID Connect issuer: the JWKS URL is the
	// jwks_uri of its discovery document
	// (<issuer>/.well-known/openid-configuration), whose issuer must be
	// this exact string (OIDC Discovery §4.3).
	OIDCIssuer string
	// InsecureLoopbackForTests also allows http:// URLs whose host is a
	// loopback address or localhost. For tests only.
	InsecureLoopbackForTests bool
	// RootCAs, when set, replaces the system roots for the fetches.
	RootCAs *x509.CertPool
	// RefreshInterval is how often the keys are fetched in the background.
	// Default: DefaultJWKSRefresh.
	RefreshInterval time.Duration
	// UnknownKIDEvery is the shortest time between two refetches caused by
	// tokens naming a key id the cache does not hold. Default:
	// DefaultJWKSUnknownKIDEvery.
	UnknownKIDEvery time.Duration
	// Timeout bounds each fetch. Default: DefaultJWKSTimeout.
	Timeout time.Duration
	// MaxBytes caps each fetched document. Default: DefaultJWKSMaxBytes.
	MaxBytes int64
	// Logger gets fetch failures; nil: none.
	Logger *zap.Logger
}

func (o JWKSOptions) enabled() bool { return o.URL != "" || o.OIDCIssuer != "" }

// ErrRemoteConfig marks a JWKS or discovery problem that retrying will not
// fix (a wrong issuer, an http URL): NewVerifierFrom returns it instead of
// starting with keys it can never load.
var ErrRemoteConfig = errors.New("jwks configuration")

var (
	errUnknownKID      = errors.New("the token's kid is not among the identity provider's keys")
	errKeysUnavailable = errors.New("the identity provider's keys are not loaded")
	errKeyAlg          = errors.New("the token's alg is not the algorithm of the key its kid names")
)

// remoteKeys is the JWKS of one identity provider.
type remoteKeys struct {
	o      JWKSOptions
	log    *zap.Logger
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	// cache is set once the JWKS URL is known: at once for URL, after
	// discovery for OIDCIssuer.
	cache      atomic.Pointer[keyCache]
	mu         sync.Mutex // one unknown-kid refetch at a time
	unknownKID *rate.Limiter
}

// keyCache is the cached JWKS: keys, refreshed in the background, and
// refetch, the same keys behind jwkset's fetch-on-unknown-kid, reached only
// through lookup, which rate-limits it with unknownKID.
type keyCache struct {
	keys, refetch jwkset.Storage
	gen           *genStorage
}

// genStorage is jwkset's memory storage counting key-set changes (each
// fetch replaces the whole set): the Verifier's cache of verified tokens
// keeps a JWKS token only while the key set it was checked against is the
// current one, so a key the provider dropped stops verifying its tokens at
// the next fetch, not at their exp. A fetch that brings the same keys
// again (the hourly refresh, nearly always) changes nothing, so the cache
// is not emptied for it.
type genStorage struct {
	jwkset.Storage
	n  atomic.Uint64
	mu sync.Mutex
	fp [sha256.Size]byte // of the keys in use; zero before the first fetch
}

func (g *genStorage) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	fp, fpErr := keySetPrint(given)
	err := g.Storage.KeyReplaceAll(ctx, given)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil || fpErr != nil || fp != g.fp || g.n.Load() == 0 {
		g.fp = fp
		g.n.Add(1)
	}
	return err
}

// keySetPrint is a digest of a key set that does not depend on the order
// of its keys.
func keySetPrint(keys []jwkset.JWK) ([sha256.Size]byte, error) {
	each := make([]string, 0, len(keys))
	for _, k := range keys {
		b, err := json.Marshal(k.Marshal())
		if err != nil {
			return [sha256.Size]byte{}, err
		}
		each = append(each, string(b))
	}
	slices.Sort(each)
	return sha256.Sum256([]byte(strings.Join(each, "\n"))), nil
}

// generation identifies the key set in use: it changes with every fetch;
// 0 before the first.
func (r *remoteKeys) generation() uint64 {
	if c := r.cache.Load(); c != nil {
		return c.gen.n.Load()
	}
	return 0
}

func (o *JWKSOptions) defaults() {
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultJWKSRefresh
	}
	if o.UnknownKIDEvery <= 0 {
		o.UnknownKIDEvery = DefaultJWKSUnknownKIDEvery
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultJWKSTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultJWKSMaxBytes
	}
}

// newRemoteKeys checks the URLs and starts fetching. The first JWKS fetch
// (and, for OIDCIssuer, the discovery) is awaited up to Timeout; a network
// failure then only delays the keys (fetches continue in the background,
// tokens are refused until they arrive), while a configuration error is
// returned, wrapping ErrRemoteConfig. Cancelling ctx or calling close stops
// every fetch.
func newRemoteKeys(ctx context.Context, o JWKSOptions) (*remoteKeys, error) {
	o.defaults()
	if (o.URL == "") == (o.OIDCIssuer == "") {
		return nil, fmt.Errorf("%w: set either a JWKS URL or an OIDC issuer", ErrRemoteConfig)
	}
	for _, u := range []string{o.URL, o.OIDCIssuer} {
		if u != "" {
			if err := checkRemoteURL(u, o.InsecureLoopbackForTests); err != nil {
				return nil, err
			}
		}
	}
	r := &remoteKeys{o: o, log: o.Logger, unknownKID: rate.NewLimiter(rate.Every(o.UnknownKIDEvery), 1)}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	r.client = newFetchClient(o)
	r.ctx, r.cancel = context.WithCancel(ctx)
	if o.URL != "" {
		if err := r.start(o.URL); err != nil {
			r.cancel()
			return nil, err
		}
		return r, nil
	}
	first, err := r.discover()
	if err != nil {
		if errors.Is(err, ErrRemoteConfig) {
			r.cancel()
			return nil, err
		}
		r.log.Warn("OIDC discovery failed; retrying in the background, tokens are refused until it succeeds",
			zap.String("issuer", o.OIDCIssuer), zap.Error(err))
		go r.discoverLoop()
		return r, nil
	}
	if err := r.start(first); err != nil {
		r.cancel()
		return nil, err
	}
	return r, nil
}

// start begins caching the JWKS at u (the first fetch awaited up to Timeout,
// its failure logged, not returned).
func (r *remoteKeys) start(u string) error {
	if err := checkRemoteURL(u, r.o.InsecureLoopbackForTests); err != nil {
		return err
	}
	gen := &genStorage{Storage: jwkset.NewMemoryStorage()}
	st, err := jwkset.NewStorageFromHTTP(u, jwkset.HTTPClientStorageOptions{
		Storage:                   gen,
		Client:                    r.client,
		Ctx:                       r.ctx,
		HTTPTimeout:               r.o.Timeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshInterval:           r.o.RefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			if r.ctx.Err() == nil {
				r.log.Warn("fetching the JWKS failed; the keys fetched last stay in use", zap.String("url", u), zap.Error(err))
			}
		},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRemoteConfig, err)
	}
	// The limiter that matters is r.unknownKID (lookup): jwkset's own one
	// blocks a request up to RateLimitWaitMax, ours refuses at once.
	refetch, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{u: st},
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
		RateLimitWaitMax:  r.o.Timeout,
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRemoteConfig, err)
	}
	r.cache.Store(&keyCache{keys: st, refetch: refetch, gen: gen})
	return nil
}

// discoveryRetry is the first wait before discovery is tried again; it
// doubles up to five minutes.
var discoveryRetry = 5 * time.Second

// discoverLoop retries discovery with backoff until it works or the
// context ends.
func (r *remoteKeys) discoverLoop() {
	wait := discoveryRetry
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(wait):
		}
		u, err := r.discover()
		if err == nil {
			if err = r.start(u); err == nil {
				r.log.Info("OIDC discovery succeeded", zap.String("issuer", r.o.OIDCIssuer), zap.String("jwks_uri", u))
				return
			}
		}
		if r.ctx.Err() != nil {
			return
		}
		r.log.Warn("OIDC discovery failed; retrying", zap.String("issuer", r.o.OIDCIssuer), zap.Duration("in", wait), zap.Error(err))
		wait = min(wait*2, 5*time.Minute)
	}
}

// discover reads the issuer's OpenID configuration and returns its jwks_uri.
func (r *remoteKeys) discover() (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	u := strings.TrimSuffix(r.o.OIDCIssuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrRemoteConfig, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	if doc.Issuer != r.o.OIDCIssuer {
		return "", fmt.Errorf("%w: the discovery document at %s names the issuer %q, not %q; set jwt_oidc_issuer to exactly the provider's issuer (a trailing slash counts)",
			ErrRemoteConfig, u, doc.Issuer, r.o.OIDCIssuer)
	}
	if doc.JWKSURI == "" {
		return "", fmt.Errorf("%w: the discovery document at %s has no jwks_uri", ErrRemoteConfig, u)
	}
	if err := checkRemoteURL(doc.JWKSURI, r.o.InsecureLoopbackForTests); err != nil {
		return "", err
	}
	return doc.JWKSURI, nil
}

func (r *remoteKeys) close() { r.cancel() }

// lookup returns the key named kid, refetching the JWKS once when it is
// not cached, and refusing at once when a refetch ran less than
// UnknownKIDEvery ago: a flood of made-up kids costs one fetch a minute.
func (r *remoteKeys) lookup(kid string) (jwkset.JWK, error) {
	c := r.cache.Load()
	if c == nil {
		return jwkset.JWK{}, errKeysUnavailable
	}
	jwk, err := c.keys.KeyRead(r.ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A refetch that ran while this one waited may have brought it.
	if jwk, err = c.keys.KeyRead(r.ctx, kid); !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	if !r.unknownKID.Allow() {
		return jwkset.JWK{}, errUnknownKID
	}
	jwk, err = c.refetch.KeyRead(r.ctx, kid)
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwkset.JWK{}, errUnknownKID
	}
	return jwk, err
}

// all returns every cached key (for a token without kid).
func (r *remoteKeys) all() ([]jwkset.JWK, error) {
	c := r.cache.Load()
	if c == nil {
		return nil, errKeysUnavailable
	}
	return c.keys.KeyReadAll(r.ctx)
}

// keyAlg is the one signature algorithm a JWK may verify: its "alg" member
// when it has one (and that fits its key type), else the algorithm its key
// type implies (RSA: RS256, the OIDC default; EC: ES256/384/512 by curve;
// OKP Ed25519: EdDSA). "" means the key verifies nothing: a symmetric
// ("oct") key, an encryption key, an unknown curve.
func keyAlg(jwk jwkset.JWK) (string, crypto.PublicKey) {
	m := jwk.Marshal()
	if m.USE != "" && m.USE != jwkset.UseSig {
		return "", nil
	}
	if len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify) {
		return "", nil
	}
	key := jwk.Key()
	if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		key = pk.Public()
	}
	var family []string
	implied := ""
	switch k := key.(type) {
	case *rsa.PublicKey:
		family, implied = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, "RS256"
		if k.N.BitLen() < 2048 {
			return "", nil
		}
	case *ecdsa.PublicKey:
		switch k.Curve.Params().Name {
		case "P-256":
			implied = "ES256"
		case "P-384":
			implied = "ES384"
		case "P-521":
			implied = "ES512"
		default:
			return "", nil
		}
		family = []string{implied}
	case ed25519.PublicKey:
		family, implied = []string{"EdDSA"}, "EdDSA"
	default:
		return "", nil
	}
	if a := m.ALG.String(); a != "" {
		if !slices.Contains(family, a) {
			return "", nil
		}
		return a, key
	}
	return implied, key
}

// keyfunc is the jwt.Keyfunc of JWKS mode: header checks, then the key the
// kid names, whose algorithm must be the token's.
func (r *remoteKeys) keyfunc(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, errCrit
	}
	if typ, ok := t.Header["typ"]; ok {
		s, _ := typ.(string)
		if !slices.ContainsFunc([]string{"at+jwt", "application/at+jwt", "JWT", "application/jwt"}, func(ok string) bool { return strings.EqualFold(s, ok) }) {
			return nil, errJWKSTyp
		}
	}
	alg := t.Method.Alg()
	kidRaw, hasKID := t.Header["kid"]
	if !hasKID {
		keys, err := r.all()
		if err != nil {
			return nil, err
		}
		var set jwt.VerificationKeySet
		for _, jwk := range keys {
			if a, key := keyAlg(jwk); a == alg {
				set.Keys = append(set.Keys, key)
			}
		}
		if len(set.Keys) == 0 {
			return nil, errUnknownKID
		}
		return set, nil
	}
	kid, ok := kidRaw.(string)
	if !ok || kid == "" || len(kid) > 256 {
		return nil, errUnknownKID
	}
	jwk, err := r.lookup(kid)
	if err != nil {
		return nil, err
	}
	a, key := keyAlg(jwk)
	if a == "" || a != alg {
		return nil, errKeyAlg
	}
	return key, nil
}

var errJWKSTyp = errors.New("the typ header must be at+jwt, JWT or absent")

// checkRemoteURL allows https URLs, and http ones on loopback only when the
// test switch is on.
func checkRemoteURL(raw string, insecureLoopback bool) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%w: %q must be an absolute https URL without user info or fragment", ErrRemoteConfig, raw)
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && insecureLoopback && loopback.Host(u.Hostname()):
		return nil
	case u.Scheme == "http" && insecureLoopback:
		return fmt.Errorf("%w: %q: the loopback test switch allows http only to 127.0.0.1, ::1 or localhost", ErrRemoteConfig, raw)
	default:
		return fmt.Errorf("%w: %q must be https: the keys that decide who may act are fetched from it", ErrRemoteConfig, raw)
	}
}

// newFetchClient is the HTTP client of JWKS and discovery fetches: a
// timeout, a size cap, https only (the test switch aside), and redirects
// only to the same scheme and host, at most three. Proxies from the
// environment are honoured: the URL is the operator's, not a caller's, and
// identity providers are often reached through one.
func newFetchClient(o JWKSOptions) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
	tr.ResponseHeaderTimeout = o.Timeout
	return &http.Client{
		Timeout:   o.Timeout,
		Transport: &fetchTransport{next: tr, o: o},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != via[0].URL.Scheme || !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
				return fmt.Errorf("refusing a redirect from %s to another scheme or host (%s://%s)", via[0].URL.Host, req.URL.Scheme, req.URL.Host)
			}
			return nil
		},
	}
}

type fetchTransport struct {
	next http.RoundTripper
	o    JWKSOptions
}

func (t *fetchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkRemoteURL(req.URL.String(), t.o.InsecureLoopbackForTests); err != nil {
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.o.MaxBytes {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: the document is %d bytes, more than the %d allowed", req.URL.Redacted(), resp.ContentLength, t.o.MaxBytes)
	}
	// One byte more than allowed tells a document of exactly MaxBytes
	// from a longer one.
	resp.Body = &cappedBody{rc: resp.Body, lr: io.LimitedReader{R: resp.Body, N: t.o.MaxBytes + 1}, max: t.o.MaxBytes}
	return resp, nil
}

// cappedBody fails a read past max bytes, so an oversized document is an
// error rather than a truncated one.
type cappedBody struct {
	rc     io.ReadCloser
	lr     io.LimitedReader
	n, max int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	n, err := b.lr.Read(p)
	if b.n += int64(n); b.n > b.max {
		return 0, fmt.Errorf("the document is larger than %d bytes", b.max)
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
