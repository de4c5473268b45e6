package feedback

import (
	"crypto/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestRedisImageMemory: a question with the most images allowed (4 of
// 1 MiB) costs Redis at most 1.2 times their bytes, and every key it made
// expires with the question. Redis' own used_memory is the measure.
func TestRedisImageMemory(t *testing.T) {
	const prefix = "img:"
	st, admin := redisWithAdmin(t, prefix)
	s := newTestService(t, st)
	ctx := t.Context()
	used := func() int64 {
		info, err := admin.Do(ctx, admin.B().Info().Section("memory").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory in INFO")
		return 0
	}
	req := &validate.CreateRequest{Message: "Which of these?", Timeout: time.Minute, AllowFreeText: true}
	stored := 0
	for range validate.MaxImages {
		data := make([]byte, validate.MaxImageBytes)
		_, _ = rand.Read(data) // incompressible, as real images are
		req.Images = append(req.Images, validate.Image{Ref: store.ImageRef{MediaType: "image/png", Bytes: len(data), Width: 1, Height: 1}, Data: data})
		stored += len(data)
	}
	req.Form = &store.Form{}
	for _, im := range req.Images {
		req.Form.Images = append(req.Form.Images, im.Ref)
	}
	before := used()
	a, err := s.Ask(ctx, Owner{Subject: "alice"}, req, "https://fb.example", Style{})
	if err != nil {
		t.Fatal(err)
	}
	// What the keys hold, as Redis accounts it (the allocator's real sizes,
	// SAMPLES 0: every element); used_memory also moves with the
	// connection's query buffer, which Redis shrinks later, so it is only
	// logged.
	held := int64(0)
	for i := range validate.MaxImages {
		for c := range store.ImageChunks(validate.MaxImageBytes) {
			n, err := admin.Do(ctx, admin.B().MemoryUsage().Key(prefix+"kv:{"+store.ImageKey(a.Session.ID, i, c)+"}").Samples(0).Build()).AsInt64()
			if err != nil {
				t.Fatal(err)
			}
			held += n
		}
	}
	ratio := float64(held) / float64(stored)
	t.Logf("4 images of 1 MiB (%d bytes): their keys hold %d bytes in Redis, %.3f×; used_memory grew by %d meanwhile", stored, held, ratio, used()-before)
	if ratio > 1.2 {
		t.Errorf("Redis holds %.2f× the images' bytes, more than 1.2×", ratio)
	}
	// Every key of the question has a TTL.
	keys, err := admin.Do(ctx, admin.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	if err != nil || len(keys) < validate.MaxImages+1 {
		t.Fatalf("keys %v %v", keys, err)
	}
	for _, k := range keys {
		if pttl, err := admin.Do(ctx, admin.B().Pttl().Key(k).Build()).AsInt64(); err != nil || pttl <= 0 {
			t.Errorf("key %s has no TTL (%d, %v)", k, pttl, err)
		}
	}
	// Read back whole.
	for i := range validate.MaxImages {
		data, mt, err := s.Image(ctx, a.Session, i)
		if err != nil || mt != "image/png" || string(data) != string(req.Images[i].Data) {
			t.Fatalf("image %d read back: %d bytes, %q, %v", i, len(data), mt, err)
		}
	}
	// The question itself stays small: its hash holds no image bytes.
	if n, err := admin.Do(ctx, admin.B().MemoryUsage().Key(prefix+"s:{"+a.Session.ID+"}").Build()).AsInt64(); err != nil || n > 4<<10 {
		t.Errorf("the question's hash takes %d bytes (%v)", n, err)
	}
}
