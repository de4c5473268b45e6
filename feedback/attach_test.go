package feedback

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/redistest"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

func attachService(t *testing.T, st store.Store) *Service {
	t.Helper()
	hub := NewHub(st)
	t.Cleanup(func() { _ = hub.Close() })
	return NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour, Attach: AttachRules{
		MaxSize: 5 << 20, MaxFiles: 5, Types: validate.AttachmentTypes, MaxBytesPerSubject: 100 << 20,
	}})
}

// pdfOf is a file of n bytes that sniffs as a PDF and does not compress,
// as real files mostly do not.
func pdfOf(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	copy(b, "%PDF-1.7\n")
	return b
}

// ttlSpy is the real memory store, with every KV Put's TTL written down
// (the memory store has no way to read a TTL back).
type ttlSpy struct {
	store.Store
	mu   sync.Mutex
	ttls map[string]time.Duration
}

func (s *ttlSpy) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	s.ttls[key] = ttl
	s.mu.Unlock()
	return s.Store.Put(ctx, key, value, ttl)
}

// TestAttachChunksAndTTL: an upload is kept in ImageChunk records plus one
// record of its ref, all with the question's TTL (its deadline plus
// retention), on both backends; the answer carries it and it reads back
// whole.
func TestAttachChunksAndTTL(t *testing.T) {
	srv := redistest.Start(t)
	rst, err := store.NewRedis(store.RedisOptions{URL: srv.URL(), KeyPrefix: "att:"})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	spy := &ttlSpy{Store: store.NewMemory(), ttls: map[string]time.Duration{}}
	for name, c := range map[string]struct {
		st  store.Store
		ttl func(t *testing.T, key string) time.Duration
	}{
		"memory": {spy, func(t *testing.T, key string) time.Duration {
			spy.mu.Lock()
			defer spy.mu.Unlock()
			return spy.ttls[key]
		}},
		"redis": {rst, func(t *testing.T, key string) time.Duration {
			ms, err := admin.Do(t.Context(), admin.B().Pttl().Key("att:kv:{"+key+"}").Build()).AsInt64()
			if err != nil {
				t.Fatal(err)
			}
			return time.Duration(ms) * time.Millisecond
		}},
	} {
		t.Run(name, func(t *testing.T) {
			s := attachService(t, c.st)
			ctx := t.Context()
			a := ask(t, s, time.Minute)
			data := pdfOf(200 << 10)
			ref, err := s.Attach(ctx, a.Session, "spec.pdf", "application/pdf", data)
			if err != nil {
				t.Fatal(err)
			}
			chunks := store.ImageChunks(len(data))
			if chunks != 4 {
				t.Fatalf("%d chunks for 200 KiB", chunks)
			}
			keys := []string{store.AttachmentMetaKey(a.Session.ID, ref.ID)}
			for i := range chunks {
				k := store.AttachmentKey(a.Session.ID, ref.ID, i)
				v, err := c.st.Load(ctx, k)
				if err != nil || len(v) > store.ImageChunk || !bytes.Equal(v, data[i*store.ImageChunk:min((i+1)*store.ImageChunk, len(data))]) {
					t.Fatalf("chunk %d: %d bytes, %v", i, len(v), err)
				}
				keys = append(keys, k)
			}
			// The question's own TTL: a minute to its deadline, an hour of
			// retention.
			for _, k := range keys {
				if ttl := c.ttl(t, k); ttl < time.Hour || ttl > time.Hour+time.Minute {
					t.Errorf("%s: TTL %v, want the question's (1h1m)", k, ttl)
				}
			}
			sess, err := s.Answer(ctx, a.Session, &validate.SubmitRequest{FreeText: "see file", Attachments: []string{ref.ID}}, Via{How: ViaLink})
			if err != nil {
				t.Fatal(err)
			}
			got, gref, err := s.Attachment(ctx, sess, ref.ID)
			if err != nil || !bytes.Equal(got, data) || gref.MediaType != "application/pdf" || gref.Name != "spec.pdf" {
				t.Fatalf("read back: %d bytes, %+v, %v", len(got), gref, err)
			}
			// Read again from the store, as another instance would.
			again, err := s.Get(ctx, Owner{Subject: "alice"}, a.Session.ID)
			if err != nil || len(again.Result.Attachments) != 1 || again.Result.Attachments[0] != *ref {
				t.Fatalf("stored result %+v, %v", again.Result, err)
			}
		})
	}
}

// TestRedisAttachmentMemory: an answer with the most attachments allowed
// (5 of 5 MiB) costs Redis at most 1.2 times their bytes, and every key
// made for them has a TTL.
func TestRedisAttachmentMemory(t *testing.T) {
	const prefix = "attm:"
	st, admin := redisWithAdmin(t, prefix)
	s := attachService(t, st)
	ctx := t.Context()
	a := ask(t, s, time.Minute)
	var ids []string
	stored := 0
	for range 5 {
		data := pdfOf(5 << 20)
		ref, err := s.Attach(ctx, a.Session, "f.pdf", "application/pdf", data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ref.ID)
		stored += len(data)
	}
	if _, err := s.Answer(ctx, a.Session, &validate.SubmitRequest{FreeText: "files", Attachments: ids}, Via{How: ViaLink}); err != nil {
		t.Fatal(err)
	}
	// Everything the uploads made: chunks, refs, the question's upload set
	// and the owner's quota set (SAMPLES 0: every element counted).
	keys, err := admin.Do(ctx, admin.B().Keys().Pattern(prefix+"kv*:{att*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	held := int64(0)
	for _, k := range keys {
		n, err := admin.Do(ctx, admin.B().MemoryUsage().Key(k).Samples(0).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		held += n
		if pttl, err := admin.Do(ctx, admin.B().Pttl().Key(k).Build()).AsInt64(); err != nil || pttl <= 0 {
			t.Errorf("key %s has no TTL (%d, %v)", k, pttl, err)
		}
	}
	if want := 5*(store.ImageChunks(5<<20)+1) + 2; len(keys) != want {
		t.Errorf("%d keys, want %d: %v", len(keys), want, keys[:min(len(keys), 5)])
	}
	ratio := float64(held) / float64(stored)
	t.Logf("5 attachments of 5 MiB (%d bytes): their keys hold %d bytes in Redis, %.3f×", stored, held, ratio)
	if ratio > 1.2 {
		t.Errorf("Redis holds %.2f× the attachments' bytes, more than 1.2×", ratio)
	}
	// The question's hash holds refs only.
	if n, err := admin.Do(ctx, admin.B().MemoryUsage().Key(prefix+"s:{"+a.Session.ID+"}").Build()).AsInt64(); err != nil || n > 4<<10 {
		t.Errorf("the question's hash takes %d bytes (%v)", n, err)
	}
}

// failingPuts is the real memory store whose KV writes of upload chunks
// fail while failing is set: a store that fills up or drops mid-upload.
type failingPuts struct {
	store.Store
	failing atomic.Bool
}

func (f *failingPuts) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if f.failing.Load() && strings.HasPrefix(key, "att:") {
		return store.ErrUnavailable
	}
	return f.Store.Put(ctx, key, value, ttl)
}

// TestAttachFailureGivesQuotaBack: an upload the store could not keep
// does not count against the asker's quota nor the question's uploads.
func TestAttachFailureGivesQuotaBack(t *testing.T) {
	st := &failingPuts{Store: store.NewMemory()}
	hub := NewHub(st)
	t.Cleanup(func() { _ = hub.Close() })
	s := NewService(hub, Config{Limits: validate.DefaultLimits(), Retention: time.Hour, Attach: AttachRules{
		MaxSize: 1 << 20, MaxFiles: 1, Types: validate.AttachmentTypes, MaxBytesPerSubject: 1 << 20,
	}})
	ctx := t.Context()
	a := ask(t, s, time.Minute)
	data := pdfOf(1 << 20) // the whole quota
	st.failing.Store(true)
	for range 4 { // more than the question's 3 uploads
		if _, err := s.Attach(ctx, a.Session, "a.pdf", "application/pdf", data); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("failing store: %v", err)
		}
	}
	st.failing.Store(false)
	if _, err := s.Attach(ctx, a.Session, "a.pdf", "application/pdf", data); err != nil {
		t.Fatalf("after the store recovered: %v", err)
	}
	// Now the quota is used: the next one is refused, saying so.
	var ule *UploadLimitError
	if _, err := s.Attach(ctx, a.Session, "b.pdf", "application/pdf", data[:100]); !errors.As(err, &ule) || !strings.Contains(ule.Msg, "1 MiB of the 1 MiB") {
		t.Fatalf("over quota: %v", err)
	}
}
