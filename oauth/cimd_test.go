package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// cimdHost serves client metadata documents on 127.0.0.1 (plain http: the
// test switch allows it for loopback, as the e2e test does over https).
type cimdHost struct {
	ts      *httptest.Server
	fetches atomic.Int32
	handle  func(w http.ResponseWriter, r *http.Request, self string)
}

func newCIMDHost(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, self string)) *cimdHost {
	h := &cimdHost{handle: handle}
	h.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fetches.Add(1)
		h.handle(w, r, h.ts.URL+r.URL.Path)
	}))
	t.Cleanup(h.ts.Close)
	return h
}

func doc(self string, redirects ...string) map[string]any {
	return map[string]any{"client_id": self, "client_name": "Doc App", "redirect_uris": redirects}
}

func serveJSON(w http.ResponseWriter, v any, cacheControl string) {
	w.Header().Set("Content-Type", "application/json")
	if cacheControl != "" {
		w.Header().Set("Cache-Control", cacheControl)
	}
	_ = json.NewEncoder(w).Encode(v)
}

func TestCIMDFlow(t *testing.T) {
	host := newCIMDHost(t, func(w http.ResponseWriter, r *http.Request, self string) {
		serveJSON(w, doc(self, cb), "max-age=600")
	})
	e := newEnv(t, func(c *Config) { c.CIMDInsecureLoopbackForTests = true })
	id := host.ts.URL + "/client.json"
	r := e.get("/oauth/authorize?"+e.authParams(id, cb).Encode(), "alice")
	if r.status != 200 || !strings.Contains(r.body, "Doc App") || !strings.Contains(r.body, strings.TrimPrefix(host.ts.URL, "http://")) {
		t.Fatalf("consent for a CIMD client: %d %s", r.status, r.body)
	}
	code := e.code(id, cb, "alice")
	if _, tk := e.exchange(id, cb, code); tk.Access == "" {
		t.Fatalf("token for a CIMD client: %+v", tk)
	}
	if n := host.fetches.Load(); n != 1 {
		t.Errorf("the document was fetched %d times; Cache-Control allows caching it", n)
	}
}

// TestCIMDRefused: documents and URLs a metadata-document client must not
// get past, each shown on the error page (no redirect to a client that
// could not be checked).
func TestCIMDRefused(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	cases := []struct {
		name   string
		serve  func(w http.ResponseWriter, r *http.Request, self string)
		path   string
		says   string
		secure bool // run with the loopback switch off
	}{
		{"redirect", func(w http.ResponseWriter, r *http.Request, self string) {
			http.Redirect(w, r, "/elsewhere.json", http.StatusFound)
		}, "/c.json", "redirects", false},
		{"1 MB document", func(w http.ResponseWriter, r *http.Request, self string) {
			serveJSON(w, map[string]any{"client_id": self, "redirect_uris": []string{cb}, "pad": big}, "")
		}, "/c.json", "larger than", false},
		{"1 MB document, no length", func(w http.ResponseWriter, r *http.Request, self string) {
			w.Header().Set("Content-Type", "application/json")
			w.(http.Flusher).Flush() // chunked: no Content-Length to refuse early
			fmt.Fprintf(w, `{"client_id":%q,"redirect_uris":[%q],"pad":"%s"}`, self, cb, big)
		}, "/c.json", "larger than", false},
		{"client_id differs", func(w http.ResponseWriter, r *http.Request, self string) {
			serveJSON(w, doc("https://claude.ai/oauth/mcp-oauth-client-metadata", cb), "")
		}, "/c.json", "not its own URL", false},
		{"no redirect_uris", func(w http.ResponseWriter, r *http.Request, self string) {
			serveJSON(w, map[string]any{"client_id": self}, "")
		}, "/c.json", "no redirect_uris", false},
		{"secret auth method", func(w http.ResponseWriter, r *http.Request, self string) {
			d := doc(self, cb)
			d["token_endpoint_auth_method"] = "client_secret_basic"
			serveJSON(w, d, "")
		}, "/c.json", "must be public", false},
		{"not JSON", func(w http.ResponseWriter, r *http.Request, self string) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>")
		}, "/c.json", "not application/json", false},
		{"HTTP 404", func(w http.ResponseWriter, r *http.Request, self string) { http.NotFound(w, r) }, "/c.json", "HTTP 404", false},
		{"javascript redirect_uri", func(w http.ResponseWriter, r *http.Request, self string) {
			serveJSON(w, doc(self, "javascript:alert(1)"), "")
		}, "/c.json", "not a redirect target", false},
		{"no path", func(w http.ResponseWriter, r *http.Request, self string) { serveJSON(w, doc(self, cb), "") }, "", "must have a path", false},
		{"dot segment", func(w http.ResponseWriter, r *http.Request, self string) { serveJSON(w, doc(self, cb), "") }, "/a/../c.json", ". or .. segments", false},
		{"loopback without the test switch", func(w http.ResponseWriter, r *http.Request, self string) {
			serveJSON(w, doc(self, cb), "")
		}, "/c.json", "must be https", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			host := newCIMDHost(t, c.serve)
			e := newEnv(t, func(cfg *Config) { cfg.CIMDInsecureLoopbackForTests = !c.secure })
			id := host.ts.URL + c.path
			r := e.get("/oauth/authorize?"+e.authParams(id, cb).Encode(), "alice")
			if r.status != 400 || r.header.Get("Location") != "" || !strings.Contains(r.body, c.says) {
				t.Fatalf("want an error page saying %q, got %d Location=%q\n%s", c.says, r.status, r.header.Get("Location"), r.body)
			}
			// Errors are not cached: the next request fetches again.
			if n := host.fetches.Load(); n > 0 {
				e.get("/oauth/authorize?"+e.authParams(id, cb).Encode(), "alice")
				if host.fetches.Load() != n+1 {
					t.Error("a refused document was cached")
				}
			}
		})
	}
}

// TestCIMDSSRF: with the test switch off, no client_id URL reaches a
// non-public address, however it names it. The name case resolves
// through the fetcher's lookup (a stand-in for DNS); the address check
// itself runs on the dialled socket, as in production.
func TestCIMDSSRF(t *testing.T) {
	e := newEnv(t)
	e.srv.cimd.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "internal.example":
			return []netip.Addr{netip.MustParseAddr("10.1.2.3")}, nil
		case "metadata.example":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		case "mapped.example":
			return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}, nil
		case "cgnat.example":
			return []netip.Addr{netip.MustParseAddr("100.64.0.1")}, nil
		case "loop.example":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	cases := []struct{ id, says string }{
		{"https://127.0.0.1/c.json", "not an IP address"},
		{"https://169.254.169.254/latest/meta-data", "not an IP address"},
		{"https://[::1]/c.json", "not an IP address"},
		{"https://2130706433/c.json", "could not be fetched"}, // 127.0.0.1 as a number: Go treats it as a name, never dials it
		{"https://internal.example/c.json", "not public"},
		{"https://metadata.example/c.json", "not public"},
		{"https://mapped.example/c.json", "not public"},
		{"https://cgnat.example/c.json", "not public"},
		{"https://loop.example/c.json", "not public"},
		{"http://example.com/c.json", "must be https"},
		{"https://user@loop.example/c.json", "user info"},
		{"https://loop.example:8443/c.json", "default https port"},
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			r := e.get("/oauth/authorize?"+e.authParams(c.id, cb).Encode(), "alice")
			if r.status != 400 || r.header.Get("Location") != "" || !strings.Contains(r.body, c.says) {
				t.Fatalf("want an error page saying %q, got %d\n%s", c.says, r.status, r.body)
			}
		})
	}
	t.Run("token endpoint too", func(t *testing.T) {
		r, tk := e.token(url.Values{"grant_type": {"authorization_code"}, "client_id": {"https://internal.example/c.json"},
			"code": {"x"}, "redirect_uri": {cb}, "code_verifier": {verifier}})
		if r.status != 401 || tk.Error != "invalid_client" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "10.0.0.1": false, "172.16.0.1": false, "192.168.1.1": false,
		"127.0.0.1": false, "169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "::1": false,
		"fe80::1": false, "fc00::1": false, "64:ff9b::a00:1": false, "2002:a00:1::": false, "224.0.0.1": false,
		"198.18.0.1": false, "240.0.0.1": false, "255.255.255.255": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr).Unmap()); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestCacheFor(t *testing.T) {
	for cc, want := range map[string]string{
		"": "0s", "max-age=600": "10m0s", "public, max-age=86400": "1h0m0s", "no-store": "0s",
		"max-age=600, no-cache": "0s", "max-age=-5": "0s", "max-age=abc": "0s",
	} {
		h := http.Header{}
		h.Set("Cache-Control", cc)
		if got := cacheFor(h).String(); got != want {
			t.Errorf("cacheFor(%q) = %s, want %s", cc, got, want)
		}
	}
}
