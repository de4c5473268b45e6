package oauth

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/loopback"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document):
// a client_id that is an https URL names a JSON document the client
// publishes about itself. A request decides which URL this server fetches,
// so the fetch is guarded against reaching inside the network (SSRF):
// https only, no proxy, no redirects, a small body, a short timeout, and
// no connection to a non-public address, checked on the address actually
// dialled (after DNS), so a name that resolves to 10.0.0.1 or rebinds
// between lookups is refused as well.
const (
	maxCIMDBytes = 5 << 10
	cimdTimeout  = 5 * time.Second
	maxCIMDCache = time.Hour
)

type fetcher struct {
	client *http.Client
	// loopback fetches loopback documents when insecure is on
	// (CIMDInsecureLoopbackForTests): it dials nothing but loopback
	// addresses, and skips certificate checks, since a test's local CA
	// (Caddy's `tls internal`) is not among the system's roots.
	loopback *http.Client
	insecure bool
	// lookup resolves a host name; tests replace it to make a name
	// resolve to a private address without a DNS server.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

func newFetcher(insecure bool) *fetcher {
	f := &fetcher{insecure: insecure}
	f.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	f.client = f.newClient(publicOnly, nil)
	if insecure {
		f.loopback = f.newClient(loopbackOnly, &tls.Config{InsecureSkipVerify: true}) // tests only, loopback only
	}
	return f
}

// newClient builds an HTTP client whose every connection goes to an
// address allow accepts, checked as the socket connects.
func (f *fetcher) newClient(allow func(netip.Addr) bool, tlsConfig *tls.Config) *http.Client {
	control := func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("dialling %q: %w", address, err)
		}
		if ip := ap.Addr().Unmap(); !allow(ip) {
			return fmt.Errorf("dialling %s: %w", ip, errNonPublic)
		}
		return nil
	}
	dialer := &net.Dialer{Timeout: cimdTimeout, Control: control}
	tr := &http.Transport{
		Proxy: nil, // a proxy would dial for us, past the address check
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := f.lookup(ctx, host)
			if err != nil {
				return nil, fmt.Errorf("resolving %s: %w", host, err)
			}
			var last error = fmt.Errorf("%s has no address", host)
			for _, ip := range ips {
				// control checks ip again as the socket connects.
				c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
				if err == nil {
					return c, nil
				}
				last = err
			}
			return nil, last
		},
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   cimdTimeout,
		ResponseHeaderTimeout: cimdTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		DisableCompression:    true, // the size cap is on what crosses the wire
	}
	return &http.Client{
		Transport: tr,
		Timeout:   cimdTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

var errNonPublic = errors.New("the address is not a public one")

func loopbackOnly(ip netip.Addr) bool { return ip.IsLoopback() }

// specialUse are the RFC 6890 (and later) special-purpose blocks that
// netip's predicates do not cover.
var specialUse = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 may reach IPv4 private space
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001::/23"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"), // 6to4 embeds any IPv4
}

func publicOnly(ip netip.Addr) bool { return publicAddr(ip) }

func publicAddr(ip netip.Addr) bool {
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range specialUse {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// checkCIMDURL applies the draft's rules for a client_id URL (§3): https,
// a path, no fragment, user info or dot segments; and this server's: no
// IP literal (an address is not a client's identity) and no port.
func (f *fetcher) checkCIMDURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, clientErr("client_id is not a valid URL")
	}
	local := f.insecure && (u.Scheme == "http" || u.Scheme == "https") && loopback.Host(u.Hostname())
	if u.Scheme != "https" && !local {
		return nil, clientErr("a client_id URL must be https")
	}
	if u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, clientErr("a client_id URL must not carry user info or a fragment")
	}
	if u.Path == "" || u.Path == "/" {
		return nil, clientErr("a client_id URL must have a path")
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, clientErr("a client_id URL must not have . or .. segments")
		}
	}
	if !local {
		if _, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
			return nil, clientErr("a client_id URL must name a host, not an IP address")
		}
		if u.Port() != "" && u.Port() != "443" {
			return nil, clientErr("a client_id URL must use the default https port")
		}
	}
	return u, nil
}

// cimdDoc is the part of a client metadata document this server reads.
type cimdDoc struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
}

// cimdClient returns the client a metadata document describes, from the
// cache when it is fresh.
func (s *Server) cimdClient(ctx context.Context, id string) (*Client, error) {
	u, err := s.cimd.checkCIMDURL(id)
	if err != nil {
		return nil, err
	}
	var cached Client
	switch err := s.loadJSON(ctx, keyCIMD(id), &cached); {
	case err == nil && cached.ID == id:
		return &cached, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	c, maxAge, err := s.cimd.fetch(ctx, u, id)
	if err != nil {
		s.log.Info("oauth: client metadata document refused", zap.String("client_id", id), zap.Error(err))
		var ce *errClient
		if errors.As(err, &ce) {
			return nil, err
		}
		return nil, clientErr("the client metadata document at client_id could not be fetched: %v", err)
	}
	if maxAge > 0 {
		if err := s.putJSON(ctx, keyCIMD(id), c, min(maxAge, maxCIMDCache)); err != nil {
			s.log.Warn("oauth: caching a client metadata document failed", zap.Error(err))
		}
	}
	return c, nil
}

// fetch gets and checks the document; maxAge is how long it may be cached
// (0: not at all).
func (f *fetcher) fetch(ctx context.Context, u *url.URL, id string) (*Client, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, cimdTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	client := f.client
	if f.insecure && loopback.Host(u.Hostname()) {
		client = f.loopback
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, errNonPublic) {
			return nil, 0, clientErr("the client_id URL resolves to an address that is not public; it is not fetched")
		}
		return nil, 0, fmt.Errorf("fetching: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, 0, clientErr("the client metadata document redirects (%d); redirects are not followed", resp.StatusCode)
		}
		return nil, 0, clientErr("fetching the client metadata document gave HTTP %d", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return nil, 0, clientErr("the client metadata document is %q, not application/json", mt)
	}
	if resp.ContentLength > maxCIMDBytes {
		return nil, 0, clientErr("the client metadata document is larger than %d bytes", maxCIMDBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCIMDBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading: %w", err)
	}
	if len(body) > maxCIMDBytes {
		return nil, 0, clientErr("the client metadata document is larger than %d bytes", maxCIMDBytes)
	}
	var doc cimdDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, 0, clientErr("the client metadata document is not valid JSON client metadata: %s", jsonProblem(err))
	}
	if doc.ClientID != id {
		return nil, 0, clientErr("the client metadata document's client_id is not its own URL")
	}
	if len(doc.RedirectURIs) == 0 {
		return nil, 0, clientErr("the client metadata document has no redirect_uris")
	}
	if m := doc.TokenEndpointAuthMethod; m != "" && m != "none" {
		return nil, 0, clientErr("the client metadata document asks for %q; a metadata document client must be public (none): it has no secret to register", m)
	}
	reg := registration{RedirectURIs: doc.RedirectURIs, ClientName: doc.ClientName, GrantTypes: doc.GrantTypes}
	for _, rt := range doc.ResponseTypes {
		if rt != "code" {
			return nil, 0, clientErr("the client metadata document asks for response type %q; only code", rt)
		}
	}
	for _, g := range doc.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			// Clients list grants this server does not offer (jwt-bearer):
			// they are ignored, not refused.
			reg.GrantTypes = nil
		}
	}
	c, err := checkRegistration(&reg)
	if err != nil {
		return nil, 0, clientErr("the client metadata document: %v", err)
	}
	c.ID, c.CIMD, c.AuthMethod = id, true, "none"
	if c.Name == "" {
		c.Name = u.Hostname()
	}
	return c, cacheFor(resp.Header), nil
}

// cacheFor reads how long a response may be cached from Cache-Control
// (max-age; no-store and no-cache mean not at all).
func cacheFor(h http.Header) time.Duration {
	cc := strings.ToLower(h.Get("Cache-Control"))
	var age time.Duration
	for _, d := range strings.Split(cc, ",") {
		d = strings.TrimSpace(d)
		switch {
		case d == "no-store" || d == "no-cache" || d == "private":
			return 0
		case strings.HasPrefix(d, "max-age="):
			n, err := strconv.Atoi(strings.TrimPrefix(d, "max-age="))
			if err == nil && n > 0 {
				age = time.Duration(min(n, int(maxCIMDCache/time.Second))) * time.Second
			}
		}
	}
	return age
}
