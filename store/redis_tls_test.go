package store_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/harness"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/store/storetest"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a server certificate for 127.0.0.1 and its key into dir.
func (ca *testCA) issue(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestRedisTLS: over rediss:// to a redis-server whose certificate comes
// from a private CA, the whole store contract holds when that CA is given,
// and the connection is refused when another CA (or none) is trusted.
func TestRedisTLS(t *testing.T) {
	ca := newTestCA(t, "test redis CA")
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir)
	tlsPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	redistest.Start(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"), "--tls-auth-clients", "no")
	url := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0"
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	storetest.Run(t, func(t *testing.T) store.Store {
		r, err := store.NewRedis(store.RedisOptions{URL: url, KeyPrefix: uniquePrefix(), RootCAs: roots})
		if err != nil {
			t.Fatalf("NewRedis over TLS with the CA: %v", err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	})

	t.Run("AnotherCA", func(t *testing.T) {
		other := x509.NewCertPool()
		other.AddCert(newTestCA(t, "someone else").cert)
		for name, opts := range map[string]store.RedisOptions{
			"another CA":     {URL: url, RootCAs: other},
			"system roots":   {URL: url},
			"plain redis://": {URL: "redis://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0", RootCAs: roots},
		} {
			r, err := store.NewRedis(opts)
			if err == nil {
				// rueidis may connect lazily; the first command must fail.
				err = r.Ping(t.Context())
				_ = r.Close()
			}
			if err == nil {
				t.Errorf("%s: connected to a server it must not trust", name)
			}
		}
	})

	t.Run("SkipVerifyRefused", func(t *testing.T) {
		_, err := store.NewRedis(store.RedisOptions{URL: url + "?skip_verify=true"})
		if err == nil || !strings.Contains(err.Error(), "tls_ca_file") || errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("skip_verify: %v, want a configuration error naming tls_ca_file", err)
		}
	})
}
