package handlers

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Attachments from the person:
//
//	POST /feedback/{id}/attachments                 multipart: "token", then "file" → the upload's ref
//	DELETE /feedback/{id}/attachments/{aid}         {"token"}: the person takes a file out again
//	GET  /api/feedback/{id}/attachments/{aid}       the owner downloads a file the answer carries
//
// The page uploads each file as soon as it is picked, with the capability
// token as the first multipart field (a body, which access logs never
// record, as for the page's other calls), and the submit names the
// returned ids. Types are proven by the bytes (validate.CheckFile), and a
// download is never a document that could run: its type is the sniffed
// one, the browser may not guess another, a sandboxing CSP applies, and
// anything but an image is a download, not a page.

// uploadOverhead is what a multipart body may carry beside the file: the
// token field, the boundaries and the part headers.
const uploadOverhead = 16 << 10

// uploadReadTimeout bounds reading an upload; 5 MiB at a slow phone's
// 100 KiB/s is under a minute.
const uploadReadTimeout = 2 * time.Minute

// Upload handles POST /feedback/{id}/attachments: the question is the one
// the capability token in the first multipart field opens.
func (h *Human) Upload(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	h.receiveUpload(w, r, `the second multipart field must be "file", the file to attach`, func(mr *multipart.Reader, tooBig string) (*store.Session, bool) {
		// The token comes first, so that nobody without it gets the file
		// read (or learns anything from the checks on it).
		part, err := mr.NextPart()
		if err != nil || part.FormName() != "token" {
			WriteError(w, http.StatusBadRequest, "invalid_request", `the first multipart field must be "token" (the answer link's token), then "file"`)
			return nil, false
		}
		tok, err := io.ReadAll(io.LimitReader(part, feedback.MaxTokenLength+1))
		if err != nil {
			uploadReadFailed(w, err, tooBig)
			return nil, false
		}
		return h.sessionForToken(w, r, string(tok))
	})
}

// receiveUpload is the upload both the answer page and the inbox make:
// the checks on the request, the multipart parsing and the core's Attach.
// They differ only in how the question is found and the right to it
// proven; session does that (having answered when it returns false)
// before a byte of the file is read. fileField says where the "file"
// field belongs in this endpoint's body.
func (h *Human) receiveUpload(w http.ResponseWriter, r *http.Request, fileField string, session func(mr *multipart.Reader, tooBig string) (*store.Session, bool)) {
	rules := h.svc.core.AttachRules()
	if rules.MaxFiles <= 0 {
		WriteError(w, http.StatusForbidden, "attachments_off", "this server takes no attachments")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", `send the file as multipart/form-data: a "token" field, then a "file" field`)
		return
	}
	tooBig := fmt.Sprintf("the file is larger than the limit of %s", feedback.HumanBytes(int64(rules.MaxSize)))
	if r.ContentLength > int64(rules.MaxSize)+uploadOverhead {
		WriteError(w, http.StatusRequestEntityTooLarge, "file_too_large", tooBig)
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, int64(rules.MaxSize)+uploadOverhead)
	mr, err := r.MultipartReader()
	if err != nil {
		WriteError(w, http.StatusBadRequest, "invalid_request", "the multipart body could not be read: "+err.Error())
		return
	}
	sess, ok := session(mr, tooBig)
	if !ok {
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "file" {
		if err != nil && !errors.Is(err, io.EOF) {
			uploadReadFailed(w, err, tooBig)
			return
		}
		WriteError(w, http.StatusBadRequest, "invalid_request", fileField)
		return
	}
	data, err := io.ReadAll(io.LimitReader(part, int64(rules.MaxSize)+1))
	if err != nil {
		uploadReadFailed(w, err, tooBig)
		return
	}
	if len(data) > rules.MaxSize {
		WriteError(w, http.StatusRequestEntityTooLarge, "file_too_large", tooBig)
		return
	}
	if next, err := mr.NextPart(); err == nil || !errors.Is(err, io.EOF) {
		if next != nil {
			WriteError(w, http.StatusBadRequest, "invalid_request", "one file per upload: nothing may follow the \"file\" field")
			return
		}
		uploadReadFailed(w, err, tooBig)
		return
	}
	ref, err := h.svc.core.Attach(r.Context(), sess, part.FileName(), part.Header.Get("Content-Type"), data)
	if err != nil {
		h.svc.attachFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ref)
}

// Unattach handles DELETE /feedback/{id}/attachments/{aid} with
// {"token":"…"}: 204, also for an upload that is already gone.
func (h *Human) Unattach(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	sess, ok := h.tokenOnly(w, r, "removing a file")
	if !ok {
		return
	}
	h.removeUpload(w, r, sess)
}

// removeUpload takes upload {aid} out of sess, for the page and the inbox.
func (h *Human) removeUpload(w http.ResponseWriter, r *http.Request, sess *store.Session) {
	if err := h.svc.core.Unattach(r.Context(), sess, r.PathValue("aid")); err != nil {
		h.svc.attachFailed(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func uploadReadFailed(w http.ResponseWriter, err error, tooBig string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		WriteError(w, http.StatusRequestEntityTooLarge, "file_too_large", tooBig)
		return
	}
	WriteError(w, http.StatusBadRequest, "invalid_request", "the upload could not be read; it may have been cut off")
}

// attachFailed answers for a refused upload.
func (s *Service) attachFailed(w http.ResponseWriter, r *http.Request, err error) {
	var (
		verr *validate.Error
		tle  *feedback.TooLargeError
		ule  *feedback.UploadLimitError
	)
	switch {
	case errors.As(err, &verr):
		if verr.Code == validate.CodeTypeNotAllowed {
			WriteError(w, http.StatusUnsupportedMediaType, verr.Code, verr.Message)
			return
		}
		WriteError(w, http.StatusBadRequest, "invalid_file", verr.Message)
	case errors.As(err, &tle):
		WriteError(w, http.StatusRequestEntityTooLarge, "file_too_large", tle.Error())
	case errors.As(err, &ule):
		if ule.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(ule.RetryAfter/time.Second)))
		}
		WriteError(w, http.StatusTooManyRequests, "quota_exceeded", ule.Msg)
	case errors.Is(err, feedback.ErrAttachOff):
		WriteError(w, http.StatusForbidden, "attachments_off", err.Error())
	default:
		s.storeError(w, r, "attach", err)
	}
}

// Attachment handles GET /api/feedback/{id}/attachments/{aid}: a file the
// answer carries, for the question's owner (scope feedback:read).
func (s *Service) Attachment(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.ownedSession(w, r)
	if !ok {
		return
	}
	data, ref, err := s.core.Attachment(r.Context(), sess, r.PathValue("aid"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			WriteError(w, http.StatusNotFound, "not_found", "the answer carries no such attachment, or it is gone with its question")
			return
		}
		s.storeError(w, r, "attachment", err)
		return
	}
	hd := w.Header()
	ct := ref.MediaType
	if ct == "text/plain" {
		ct += "; charset=utf-8"
	}
	hd.Set("Content-Type", ct)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", imageCSP)
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Cache-Control", "private, no-store")
	disp := "attachment"
	if strings.HasPrefix(ref.MediaType, "image/") {
		disp = "inline"
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": ref.Name}); v != "" {
		disp = v
	}
	hd.Set("Content-Disposition", disp)
	hd.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

// AttachmentURL is where the owner downloads attachment aid of question id.
func AttachmentURL(base, id, aid string) string {
	return strings.TrimRight(base, "/") + "/api/feedback/" + id + "/attachments/" + aid
}

// withURLs returns r with each attachment's download URL under base; r
// itself (which may be the store's) is not changed.
func withURLs(r *store.Result, base, id string) *store.Result {
	if r == nil || len(r.Attachments) == 0 {
		return r
	}
	c := *r
	c.Attachments = make([]store.AttachmentRef, len(r.Attachments))
	for i, a := range r.Attachments {
		a.URL = AttachmentURL(base, id, a.ID)
		c.Attachments[i] = a
	}
	return &c
}

// mcpImageBudget bounds the image bytes one tool result embeds: base64
// makes them 4/3 larger, and the whole message stays under the 256 KiB
// that this transport (and clients with the same cap) take.
const mcpImageBudget = 160 << 10

// attachmentContent is how an answer's attachments reach the agent over
// MCP: images as image content blocks while they fit mcpImageBudget (the
// model sees them at once), everything else, and images past the budget,
// as resource links to the owner's download URL (the agent's client
// fetches them with the token it already holds; embedding a 5 MiB PDF
// would break the message size every client caps).
func attachmentContent(ctx context.Context, core *feedback.Service, sess *store.Session) []mcp.Content {
	if sess.Result == nil || len(sess.Result.Attachments) == 0 {
		return nil
	}
	var out []mcp.Content
	budget := mcpImageBudget
	for _, a := range sess.Result.Attachments {
		if strings.HasPrefix(a.MediaType, "image/") && a.Bytes <= budget {
			if data, _, err := core.Attachment(ctx, sess, a.ID); err == nil {
				budget -= a.Bytes
				out = append(out, mcp.NewImageContent(base64.StdEncoding.EncodeToString(data), a.MediaType))
				continue
			}
		}
		size := int64(a.Bytes)
		link := mcp.NewResourceLink(a.URL, a.Name, fmt.Sprintf("A file the user attached (%s, %s); GET it with your bearer token.", a.MediaType, feedback.HumanBytes(size)), a.MediaType)
		link.Size = &size
		out = append(out, link)
	}
	return out
}
