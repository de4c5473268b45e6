package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// AttachmentRef is one file the person attached to their answer: uploaded
// before the submit, under the question's capability, and named by the
// submit. Its bytes live in KV records beside the question (AttachmentKey,
// in ImageChunk pieces, with the question's TTL), so that reading a
// question or its result never loads them.
type AttachmentRef struct {
	// ID is the upload's id, random and unique within its question.
	ID string `json:"id"`
	// Name is the file name the browser gave, cleaned (no path, no control
	// characters); only ever shown or offered as a download name.
	Name string `json:"name"`
	// MediaType is the type found from the bytes (never the declared one).
	MediaType string `json:"mediaType"`
	Bytes     int    `json:"bytes"`
	// URL is where the question's owner downloads it with their token. It
	// is never stored: the transports fill it in on the way out.
	URL string `json:"url,omitempty"`
}

// AttachmentKey is the KV key of chunk c of upload aid of question id.
// Chunks are ImageChunk bytes, for the same reason as images': each fills
// a Redis size class, so memory stays within a few per cent of the bytes.
func AttachmentKey(id, aid string, c int) string { return fmt.Sprintf("att:%s:%s:%d", id, aid, c) }

// AttachmentMetaKey is the KV key of upload aid's AttachmentRef (JSON):
// written after its chunks, so that a ref the submit finds always has its
// bytes.
func AttachmentMetaKey(id, aid string) string { return fmt.Sprintf("attm:%s:%s", id, aid) }

// AttachmentSetKey is the KV set of a question's uploads, which bounds how
// many one question may take.
func AttachmentSetKey(id string) string { return "atts:" + id }

// AttachmentQuotaKey is the KV set that counts an owner's stored upload
// bytes: one member per upload, "<question>/<upload>/<bytes>", living as
// long as the upload. The owner is hashed because an issuer or subject may
// hold characters a key may not.
func AttachmentQuotaKey(o Owner) string {
	sum := sha256.Sum256([]byte(o.Issuer + "\x00" + o.Subject))
	return "attq:" + hex.EncodeToString(sum[:16])
}
