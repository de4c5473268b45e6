package feedback

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Large bytes (the asker's images, the person's attachments) are kept in
// records of store.ImageChunk bytes, which keeps Redis' memory close to the
// bytes themselves (whole 1 MiB values cost 1.25×, measured); key names
// chunk c.

// putChunks writes data as chunk records with ttl.
func (s *Service) putChunks(ctx context.Context, key func(c int) string, data []byte, ttl time.Duration) error {
	for c := range store.ImageChunks(len(data)) {
		chunk := data[c*store.ImageChunk : min((c+1)*store.ImageChunk, len(data))]
		if err := s.hub.store.Put(ctx, key(c), chunk, ttl); err != nil {
			return fmt.Errorf("storing chunk %d: %w", c, err)
		}
	}
	return nil
}

// loadChunks reads back n bytes written by putChunks; store.ErrNotFound
// when a chunk is gone or the bytes do not add up.
func (s *Service) loadChunks(ctx context.Context, key func(c int) string, n int) ([]byte, error) {
	data := make([]byte, 0, n)
	for c := range store.ImageChunks(n) {
		chunk, err := s.hub.store.Load(ctx, key(c))
		if err != nil {
			return nil, err
		}
		data = append(data, chunk...)
	}
	if len(data) != n {
		return nil, fmt.Errorf("%d bytes stored, %d expected: %w", len(data), n, store.ErrNotFound)
	}
	return data, nil
}

// quotaMember is an upload's entry in its asker's byte quota: the bytes
// are part of it, so the quota can be summed from the entries alone. Adding
// and removing must name it alike, or quota would never be released.
func quotaMember(session, upload string, bytes int) string {
	return session + "/" + upload + "/" + strconv.Itoa(bytes)
}
