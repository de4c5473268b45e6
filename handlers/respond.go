package handlers

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// errorBody is the one shape of every error this module returns.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeJSON sends v with status. Responses carry data about one session or
// one caller, so no intermediary may keep them.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError sends {"error":{"code","message"}}.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

func writeValidation(w http.ResponseWriter, verr *validate.Error) {
	WriteError(w, http.StatusBadRequest, verr.Code, verr.Message)
}

// notFound is the answer for unknown ids, malformed ids and other people's
// sessions alike, so that a caller cannot probe which ids exist.
func notFound(w http.ResponseWriter) {
	WriteError(w, http.StatusNotFound, "not_found", "no session with this id exists, or it is not yours")
}

// StoreStatus maps a store error to an HTTP status, error code and message:
// the one mapping every endpoint and the MCP tools share.
func StoreStatus(err error) (int, string, string) {
	var qe *store.QuotaError
	var fe *store.FullError
	switch {
	case errors.As(err, &fe):
		return http.StatusServiceUnavailable, "store_full", fe.Error() + "; retry after " + retryAfter(err) + " s"
	case errors.As(err, &qe):
		return http.StatusTooManyRequests, "quota_exceeded", qe.Error() + "; retry after " + retryAfter(err) + " s, or answer or cancel pending questions"
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not_found", "no session with this id exists, or it is not yours"
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, "already_answered", "this question has already been answered"
	case errors.Is(err, store.ErrGone):
		return http.StatusGone, "closed", "this question is closed: it expired or the agent withdrew it"
	default:
		return http.StatusServiceUnavailable, "store_unavailable", "the session store is not reachable; retry shortly"
	}
}

func writeStoreError(w http.ResponseWriter, err error) {
	status, code, msg := StoreStatus(err)
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfter(err))
	}
	WriteError(w, status, code, msg)
}

// retryAfter is the Retry-After value for err, in whole seconds (at least 1).
func retryAfter(err error) string {
	var (
		qe *store.QuotaError
		fe *store.FullError
		d  time.Duration
	)
	switch {
	case errors.As(err, &qe):
		d = qe.RetryAfter
	case errors.As(err, &fe):
		d = fe.RetryAfter
	}
	if d > time.Second {
		return strconv.Itoa(int((d + time.Second - 1) / time.Second))
	}
	return "1"
}

// bodyReadTimeout bounds reading a request body (64 KiB at most).
const bodyReadTimeout = 10 * time.Second

// readJSONBody enforces content type, size and read time before anything
// is parsed.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as Content-Type: application/json")
		return nil, false
	}
	// A body trickled in byte by byte must not hold the handler: the
	// endpoints that read one are open to anyone holding a link.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	body, err := readLimited(w, r, validate.MaxBodyBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than 64 KiB")
			return nil, false
		}
		WriteError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
		return nil, false
	}
	return body, true
}

func readLimited(w http.ResponseWriter, r *http.Request, n int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, n)
	defer rd.Close()
	return io.ReadAll(rd)
}
