// Package pushtest is a Web Push service for tests: a local receiver that
// speaks the push service's side of RFC 8030 on 127.0.0.1, holds devices
// whose keys the test generated (as a browser does for a subscription),
// decrypts every message as the browser would (RFC 8291, aes128gcm, RFC
// 8188) and checks its VAPID authorization (RFC 8292). No mock of the
// sender: messages arrive over HTTP exactly as a real push service gets
// them.
package pushtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Message is one push request as the device got it.
type Message struct {
	Device  string // the device's name
	Plain   []byte // the decrypted payload
	TTL     int
	Urgency string
	Topic   string
	// Subject is the VAPID token's sub (mailto:… or https:…).
	Subject string
	// Err is what was wrong with the request (decryption, VAPID); the
	// receiver answered it 400.
	Err error
}

// Device is one subscribed browser: its key pair and auth secret.
type Device struct {
	Name   string
	priv   *ecdh.PrivateKey
	auth   []byte
	Path   string
	Key    string // p256dh, base64url
	Secret string // auth, base64url
}

// Next is the next message a device took, failing t when a device could
// not take it or none arrives within the given time.
func (r *Receiver) Next(t testing.TB, within time.Duration) Message {
	t.Helper()
	select {
	case m := <-r.Messages:
		if m.Err != nil {
			t.Fatalf("device %s could not take the message: %v", m.Device, m.Err)
		}
		return m
	case <-time.After(within):
		t.Fatalf("no push message arrived within %v", within)
		return Message{}
	}
}

// Receiver is the push service.
type Receiver struct {
	srv *httptest.Server
	// vapid is the application server's public key (uncompressed point)
	// that every message must be signed with.
	vapid []byte

	mu      sync.Mutex
	devices map[string]*Device
	// respond, when set, picks the status (and headers) for a request,
	// before the message is decrypted; 0 means accept (201).
	respond func(dev string, n int) (int, http.Header)
	counts  map[string]int
	// Messages gets every accepted (or failed) message.
	Messages chan Message
	// Hits counts every request, answered or not.
	Hits chan string
}

// NewReceiver starts a receiver on 127.0.0.1 that accepts messages signed
// with vapidPublic (base64url).
func NewReceiver(vapidPublic string) (*Receiver, error) {
	k, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(vapidPublic, "="))
	if err != nil {
		return nil, fmt.Errorf("vapid key: %w", err)
	}
	r := &Receiver{vapid: k, devices: map[string]*Device{}, counts: map[string]int{},
		Messages: make(chan Message, 1000), Hits: make(chan string, 1000)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r, nil
}

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

// Respond sets how the receiver answers: f gets the device name and the
// number of this request to it (1, 2, …) and returns a status (0: accept).
// f may block (a hanging push service).
func (r *Receiver) Respond(f func(dev string, n int) (int, http.Header)) {
	r.mu.Lock()
	r.respond = f
	r.mu.Unlock()
}

// NewDevice subscribes a new device: fresh keys, its own endpoint.
func (r *Receiver) NewDevice(name string) (*Device, error) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	d := &Device{Name: name, priv: priv, auth: auth, Path: "/push/" + rand.Text(),
		Key: base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes()), Secret: base64.RawURLEncoding.EncodeToString(auth)}
	r.mu.Lock()
	r.devices[d.Path] = d
	r.mu.Unlock()
	return d, nil
}

// Endpoint is d's push endpoint URL.
func (r *Receiver) Endpoint(d *Device) string { return r.srv.URL + d.Path }

// Origin is the receiver's scheme://host:port, the VAPID audience.
func (r *Receiver) Origin() string { return r.srv.URL }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	d := r.devices[req.URL.Path]
	respond := r.respond
	n := 0
	if d != nil {
		r.counts[d.Name]++
		n = r.counts[d.Name]
	}
	r.mu.Unlock()
	if d == nil || req.Method != http.MethodPost {
		http.NotFound(w, req)
		return
	}
	select {
	case r.Hits <- d.Name:
	default:
	}
	if respond != nil {
		if status, hdr := respond(d.Name, n); status != 0 {
			for k, v := range hdr {
				w.Header()[k] = v
			}
			w.WriteHeader(status)
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 8192))
	m := Message{Device: d.Name, Urgency: req.Header.Get("Urgency"), Topic: req.Header.Get("Topic")}
	m.TTL, _ = strconv.Atoi(req.Header.Get("TTL"))
	if err == nil {
		m.Subject, err = r.checkVAPID(req.Header.Get("Authorization"))
	}
	if err == nil && req.Header.Get("Content-Encoding") != "aes128gcm" {
		err = fmt.Errorf("content encoding %q, want aes128gcm", req.Header.Get("Content-Encoding"))
	}
	if err == nil && req.Header.Get("TTL") == "" {
		err = errors.New("no TTL header (RFC 8030 §5.2 requires one)")
	}
	if err == nil {
		m.Plain, err = d.Decrypt(body)
	}
	m.Err = err
	r.Messages <- m
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Location", r.srv.URL+"/message/"+rand.Text())
	w.WriteHeader(http.StatusCreated)
}

// checkVAPID verifies `vapid t=<jwt>, k=<key>` (RFC 8292 §3): k is the
// expected application server key, t an ES256 token signed by it for this
// origin, not yet expired and at most 24 h ahead, with a contact subject.
func (r *Receiver) checkVAPID(h string) (string, error) {
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		return "", fmt.Errorf("the Authorization header %q is not the vapid scheme", h)
	}
	var t, k string
	for _, part := range strings.Split(rest, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "t":
			t = val
		case "k":
			k = val
		}
	}
	key, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil || string(key) != string(r.vapid) {
		return "", errors.New("vapid k is not the application server key the device subscribed with")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), key)
	if err != nil {
		return "", fmt.Errorf("vapid k: %w", err)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(t, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(r.srv.URL), jwt.WithExpirationRequired())
	if err != nil {
		return "", fmt.Errorf("vapid token: %w", err)
	}
	exp, _ := claims.GetExpirationTime()
	if time.Until(exp.Time) > 24*time.Hour {
		return "", errors.New("vapid token expires more than 24 h ahead")
	}
	sub, _ := claims["sub"].(string)
	if !strings.HasPrefix(sub, "mailto:") && !strings.HasPrefix(sub, "https:") {
		return "", fmt.Errorf("vapid sub %q is neither a mailto: nor an https: URL", sub)
	}
	return sub, nil
}

// Decrypt opens an aes128gcm Web Push message to d (RFC 8291 §3.4).
func (d *Device) Decrypt(body []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("body shorter than the aes128gcm header")
	}
	salt, rs, idlen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if idlen != 65 || len(body) < 21+idlen {
		return nil, fmt.Errorf("key id of %d bytes, want the sender's 65-byte public key", idlen)
	}
	senderPub, ct := body[21:21+idlen], body[21+idlen:]
	if uint32(len(ct)) > rs {
		return nil, fmt.Errorf("%d bytes of ciphertext in a record of %d: more than one record", len(ct), rs)
	}
	sp, err := ecdh.P256().NewPublicKey(senderPub)
	if err != nil {
		return nil, fmt.Errorf("sender key: %w", err)
	}
	shared, err := d.priv.ECDH(sp)
	if err != nil {
		return nil, err
	}
	info := append(append([]byte("WebPush: info\x00"), d.priv.PublicKey().Bytes()...), senderPub...)
	ikm, err := hkdf.Key(sha256.New, shared, d.auth, string(info), 32)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, ct, nil)
	if err != nil {
		return nil, fmt.Errorf("decrypting: %w", err)
	}
	// Padding: trailing zeros after the delimiter 0x02 (last record).
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 0x02 {
		return nil, errors.New("no last-record padding delimiter")
	}
	return plain[:i], nil
}
