package handlers

import (
	"bytes"
	"encoding/json"
	"net/http"
	"unicode/utf8"
)

// quickBody is a one-tap answer: the answer token a notification carried
// and the option its button stands for. The token travels in the body,
// never in the URL, so no access log records it.
type quickBody struct {
	Token  string `json:"token"`
	Option string `json:"option"`
}

// Quick handles POST /feedback/{id}/quick with {"token":"…","option":"…"}:
// the answer from a notification's button (a Web Push action posted by the
// service worker, or an ntfy `http` action posted by the ntfy app). The
// token can pick exactly one of the question's offered options, once; the
// answer is stored through the core like any other (Via push or ntfy).
// An unknown id, an unknown token and a token of another question all get
// the same 404.
func (h *Human) Quick(w http.ResponseWriter, r *http.Request) {
	setPageHeaders(w, r)
	raw, ok := readJSONBody(w, r)
	if !ok {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b quickBody
	if err := dec.Decode(&b); err != nil || dec.More() {
		WriteError(w, http.StatusBadRequest, "invalid_request", `the body must be one JSON object {"token":"…","option":"…"}`)
		return
	}
	if b.Token == "" {
		WriteError(w, http.StatusBadRequest, "invalid_request", `"token" is required: the answer token the notification carried`)
		return
	}
	if b.Option == "" || !utf8.ValidString(b.Option) {
		WriteError(w, http.StatusBadRequest, "invalid_request", `"option" is required: one of the question's offered options`)
		return
	}
	sess, err := h.svc.core.AnswerWithToken(r.Context(), r.PathValue("id"), b.Token, b.Option)
	if err != nil {
		h.svc.answerFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, QuickResponse{SessionID: sess.ID, Status: string(sess.Status), Option: b.Option, Via: sess.Result.Via})
}

// QuickResponse is the answer to a one-tap answer.
type QuickResponse struct {
	SessionID string `json:"sessionId"`
	Status    string `json:"status"`
	Option    string `json:"option"`
	Via       string `json:"via"`
}
