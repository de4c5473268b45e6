package feedback

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// AttachRules bound what a person may attach to an answer. The zero value
// (MaxFiles 0) refuses attachments.
type AttachRules struct {
	// MaxSize caps one file, in bytes.
	MaxSize int
	// MaxFiles caps the files one answer carries. A question takes up to
	// UploadsPerFile times as many uploads, so that the person can replace
	// a file or two, but no more.
	MaxFiles int
	// Types are the allowed media types (a subset of validate.AttachmentTypes).
	Types []string
	// MaxBytesPerSubject caps the upload bytes stored for one question
	// owner's questions at a time; 0 is no cap.
	MaxBytesPerSubject int64
}

// UploadsPerFile: a question takes MaxFiles × UploadsPerFile uploads.
const UploadsPerFile = 3

// TooLargeError is a file over AttachRules.MaxSize.
type TooLargeError struct{ Size, Max int }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the file is %s; the limit is %s", HumanBytes(int64(e.Size)), HumanBytes(int64(e.Max)))
}

// UploadLimitError is an upload refused because a count or the owner's
// byte quota is used up. RetryAfter is when room may free up (0: not
// before the question ends).
type UploadLimitError struct {
	Msg        string
	RetryAfter time.Duration
}

func (e *UploadLimitError) Error() string { return e.Msg }

// ErrAttachOff: this configuration takes no attachments.
var ErrAttachOff = errors.New("this server takes no attachments")

// HumanBytes writes n in the largest binary unit that keeps it whole-ish:
// "5 MiB", "1.5 KiB", "812 B".
func HumanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + " " + units[u]
}

// AttachRules are this configuration's rules for attachments.
func (s *Service) AttachRules() AttachRules { return s.cfg.Attach }

// Attach stores one file the person uploads for their answer to sess
// (read with its capability token) and returns its ref. The question must
// be pending. The file lives with the question's TTL whether or not an
// answer names it: an unnamed upload simply expires.
func (s *Service) Attach(ctx context.Context, sess *Session, name, declared string, data []byte) (*store.AttachmentRef, error) {
	rules := s.cfg.Attach
	if rules.MaxFiles <= 0 {
		return nil, ErrAttachOff
	}
	switch sess.Status {
	case store.StatusPending:
	case store.StatusSubmitted:
		return nil, store.ErrConflict
	default:
		return nil, store.ErrGone
	}
	if len(data) > rules.MaxSize {
		return nil, &TooLargeError{Size: len(data), Max: rules.MaxSize}
	}
	mt, verr := validate.CheckFile(data, declared, rules.Types)
	if verr != nil {
		return nil, verr
	}
	now := s.cfg.Now()
	until := sess.ExpiresAt.Add(s.cfg.Retention)
	ttl := until.Sub(now)
	if ttl < time.Second || !now.Before(sess.ExpiresAt) {
		return nil, store.ErrGone
	}
	kv := s.hub.store
	ref := &store.AttachmentRef{ID: strings.ToLower(rand.Text()), Name: validate.CleanFileName(name), MediaType: mt, Bytes: len(data)}

	// Count first, then store: a reservation that is over a limit is taken
	// back, so two uploads racing for the last room cannot both keep it
	// (both may be refused; that fails closed).
	set := store.AttachmentSetKey(sess.ID)
	if err := kv.AddMember(ctx, set, ref.ID, until); err != nil {
		return nil, fmt.Errorf("attaching to %s: counting uploads: %w", sess.ID, err)
	}
	members, err := kv.Members(ctx, set)
	if err != nil {
		return nil, fmt.Errorf("attaching to %s: counting uploads: %w", sess.ID, err)
	}
	if max := rules.MaxFiles * UploadsPerFile; len(members) > max {
		_ = kv.RemoveMember(context.WithoutCancel(ctx), set, ref.ID)
		return nil, &UploadLimitError{Msg: fmt.Sprintf("this question has taken its %d uploads; send the answer with the files already uploaded", max)}
	}
	if rules.MaxBytesPerSubject > 0 {
		qkey := store.AttachmentQuotaKey(sess.Owner)
		member := quotaMember(sess.ID, ref.ID, len(data))
		if err := kv.AddMember(ctx, qkey, member, until); err != nil {
			return nil, fmt.Errorf("attaching to %s: quota: %w", sess.ID, err)
		}
		used, err := quotaBytes(ctx, kv, qkey)
		if err != nil {
			return nil, fmt.Errorf("attaching to %s: quota: %w", sess.ID, err)
		}
		if used > rules.MaxBytesPerSubject {
			_ = kv.RemoveMember(context.WithoutCancel(ctx), qkey, member)
			_ = kv.RemoveMember(context.WithoutCancel(ctx), set, ref.ID)
			return nil, &UploadLimitError{
				Msg:        fmt.Sprintf("the files attached to this agent's open questions take up %s of the %s it may use; try again once some of its questions have ended", HumanBytes(used-int64(len(data))), HumanBytes(rules.MaxBytesPerSubject)),
				RetryAfter: time.Minute,
			}
		}
	}
	if err := s.storeUpload(ctx, sess, ref, data, ttl); err != nil {
		// Give the reservations back, so that a failed write (the store
		// full or down) does not count against the asker until it expires;
		// chunks already written expire with the question.
		bg := context.WithoutCancel(ctx)
		_ = kv.RemoveMember(bg, set, ref.ID)
		if rules.MaxBytesPerSubject > 0 {
			_ = kv.RemoveMember(bg, store.AttachmentQuotaKey(sess.Owner), quotaMember(sess.ID, ref.ID, len(data)))
		}
		return nil, err
	}
	return ref, nil
}

// storeUpload writes an upload's chunks, then its ref: a ref that the
// submit finds always has all its bytes.
func (s *Service) storeUpload(ctx context.Context, sess *Session, ref *store.AttachmentRef, data []byte, ttl time.Duration) error {
	kv := s.hub.store
	if err := s.putChunks(ctx, func(c int) string { return store.AttachmentKey(sess.ID, ref.ID, c) }, data, ttl); err != nil {
		return fmt.Errorf("attaching to %s: %w", sess.ID, err)
	}
	meta, err := json.Marshal(ref)
	if err != nil {
		return fmt.Errorf("attaching to %s: %w", sess.ID, err)
	}
	if err := kv.Put(ctx, store.AttachmentMetaKey(sess.ID, ref.ID), meta, ttl); err != nil {
		return fmt.Errorf("attaching to %s: storing its record: %w", sess.ID, err)
	}
	return nil
}

// quotaBytes sums the byte counts of a quota set's live members.
func quotaBytes(ctx context.Context, kv store.KV, key string) (int64, error) {
	members, err := kv.Members(ctx, key)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, m := range members {
		if i := strings.LastIndexByte(m, '/'); i >= 0 {
			n, _ := strconv.ParseInt(m[i+1:], 10, 64)
			sum += n
		}
	}
	return sum, nil
}

// attachments turns a submit's upload ids into refs, checking each is an
// upload of this question that is still there.
func (s *Service) attachments(ctx context.Context, sess *Session, ids []string) ([]store.AttachmentRef, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if max := s.cfg.Attach.MaxFiles; len(ids) > max {
		if max <= 0 {
			return nil, &validate.Error{Code: "invalid_request", Message: "this server takes no attachments"}
		}
		return nil, &validate.Error{Code: "invalid_request", Message: fmt.Sprintf("attachments has %d files; an answer carries at most %d", len(ids), max)}
	}
	refs := make([]store.AttachmentRef, 0, len(ids))
	for i, aid := range ids {
		raw, err := s.hub.store.Load(ctx, store.AttachmentMetaKey(sess.ID, aid))
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrKVArgument) {
			return nil, &validate.Error{Code: "invalid_request", Message: fmt.Sprintf("attachments[%d] is not a file uploaded for this question, or it has expired; upload it again", i)}
		}
		if err != nil {
			return nil, fmt.Errorf("reading upload %d of %s: %w", i, sess.ID, err)
		}
		var ref store.AttachmentRef
		if err := json.Unmarshal(raw, &ref); err != nil {
			return nil, fmt.Errorf("decoding upload %d of %s: %w", i, sess.ID, err)
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// Attachment returns the bytes and ref of the file aid that sess's answer
// carries (sess read by its owner). Uploads the answer does not name are
// not served: store.ErrNotFound, as for an unknown one.
func (s *Service) Attachment(ctx context.Context, sess *Session, aid string) ([]byte, *store.AttachmentRef, error) {
	if sess.Result == nil {
		return nil, nil, store.ErrNotFound
	}
	var ref *store.AttachmentRef
	for i := range sess.Result.Attachments {
		if sess.Result.Attachments[i].ID == aid {
			r := sess.Result.Attachments[i]
			ref = &r
		}
	}
	if ref == nil {
		return nil, nil, store.ErrNotFound
	}
	data, err := s.loadChunks(ctx, func(c int) string { return store.AttachmentKey(sess.ID, aid, c) }, ref.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("attachment %s of %s: %w", aid, sess.ID, err)
	}
	return data, ref, nil
}

// Unattach deletes upload aid of sess (read with its capability token)
// while the question is pending: the person took the file out of their
// answer. Its bytes leave the store and the owner's quota at once; the
// question's count of uploads keeps it, so that uploading and removing in
// a loop cannot go on without end. Removing an unknown or removed upload
// succeeds (the page may retry). An answer sent at the same moment that
// names it keeps a ref whose download is gone (404), as if it had expired.
func (s *Service) Unattach(ctx context.Context, sess *Session, aid string) error {
	switch sess.Status {
	case store.StatusPending:
	case store.StatusSubmitted:
		return store.ErrConflict
	default:
		return store.ErrGone
	}
	kv := s.hub.store
	metaKey := store.AttachmentMetaKey(sess.ID, aid)
	raw, err := kv.Take(ctx, metaKey)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrKVArgument) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing upload of %s: %w", sess.ID, err)
	}
	var ref store.AttachmentRef
	if err := json.Unmarshal(raw, &ref); err != nil {
		return fmt.Errorf("removing upload of %s: decoding: %w", sess.ID, err)
	}
	for c := range store.ImageChunks(ref.Bytes) {
		if err := kv.Delete(ctx, store.AttachmentKey(sess.ID, aid, c)); err != nil {
			return fmt.Errorf("removing upload of %s: chunk %d: %w", sess.ID, c, err)
		}
	}
	if err := kv.RemoveMember(ctx, store.AttachmentQuotaKey(sess.Owner), quotaMember(sess.ID, aid, ref.Bytes)); err != nil {
		return fmt.Errorf("removing upload of %s: quota: %w", sess.ID, err)
	}
	return nil
}
