package handlers

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
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
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// setJSONHeaders sets the headers of every JSON response: as Header.Set
// would, with one allocation for the three values. Each value slice has a
// capacity of one, so that a later Add (or a handler after this one that
// rewrites a value in place) touches only its own header.
func setJSONHeaders(h http.Header) {
	v := make([]string, 3)
	v[0], v[1], v[2] = "application/json; charset=utf-8", "no-store", "nosniff"
	h["Content-Type"] = v[0:1:1]
	h["Cache-Control"] = v[1:2:2]
	h["X-Content-Type-Options"] = v[2:3:3]
}

// The hot responses (create, status, submit) are encoded by hand into a
// pooled buffer, byte for byte as encoding/json would encode their types
// (a test holds them to it): reflection and its allocations were a fair
// share of those requests.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeBody sends a JSON body built by build (appending to its argument)
// with status and the JSON headers.
func writeBody(w http.ResponseWriter, status int, build func([]byte) []byte) {
	bp := bodyPool.Get().(*[]byte)
	b := build((*bp)[:0])
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(b)
	if cap(b) <= 4<<10 {
		*bp = b
		bodyPool.Put(bp)
	}
}

// appendString appends s as encoding/json encodes a string (HTML-safe).
// Plain ASCII, which every id, status and URL here is, is copied as is;
// anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as time.Time.MarshalJSON does.
func appendTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		q, _ := json.Marshal(t)
		return append(b, q...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendField appends `"name":` after a comma unless it is the first.
func appendField(b []byte, name string) []byte {
	if len(b) > 0 && b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
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
	return readJSONBodyUpTo(w, r, validate.MaxBodyBytes)
}

// readJSONBodyUpTo is readJSONBody with another limit: a create with
// images may be larger, but only by its images (validate.NonImageBytes).
func readJSONBodyUpTo(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as Content-Type: application/json")
		return nil, false
	}
	// A body trickled in byte by byte must not hold the handler: the
	// endpoints that read one are open to anyone holding a link.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	body, err := readLimited(w, r, limit)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", tooLarge)
			return nil, false
		}
		WriteError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
		return nil, false
	}
	if validate.NonImageBytes(body) > validate.MaxBodyBytes {
		WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", tooLarge)
		return nil, false
	}
	return body, true
}

const tooLarge = "the request body is larger than 64 KiB (images aside: up to 4 of 1 MiB each)"

func readLimited(w http.ResponseWriter, r *http.Request, n int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, n)
	defer rd.Close()
	return io.ReadAll(rd)
}
