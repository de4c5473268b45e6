package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// CreateResponse is the body of a successful create.
type CreateResponse struct {
	SessionID   string       `json:"sessionId"`
	FeedbackURL string       `json:"feedbackUrl,omitempty"`
	Status      store.Status `json:"status"`
	CreatedAt   time.Time    `json:"createdAt"`
	ExpiresAt   time.Time    `json:"expiresAt"`
	Timeout     int64        `json:"timeout"`
	// Warnings say what was changed rather than refused, e.g. a timeout
	// outside the allowed range that was clamped.
	Warnings []string `json:"warnings,omitempty"`
}

// StatusResponse is the body of GET …/status and POST …/cancel: the one
// state type REST and MCP share.
type StatusResponse = feedback.State

// ResultResponse is the body of GET …/result.
type ResultResponse struct {
	SessionID string        `json:"sessionId"`
	Status    store.Status  `json:"status"`
	Result    *store.Result `json:"result"`
}

// SubmitResponse is the body of a successful submit.
type SubmitResponse struct {
	SessionID   string       `json:"sessionId"`
	Status      store.Status `json:"status"`
	SubmittedAt time.Time    `json:"submittedAt"`
}

// Create handles POST /api/feedback/create.
func (s *Service) Create(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticate(w, r, auth.ScopeCreate)
	if !ok {
		return
	}
	body, ok := readJSONBodyUpTo(w, r, validate.MaxCreateBytes)
	if !ok {
		return
	}
	req, style, _, verr := decodeAsk(body, s.core.Limits())
	if verr != nil {
		writeValidation(w, verr)
		return
	}
	asked, err := s.core.Ask(r.Context(), OwnerOf(claims), req, s.cfg.BaseURL(r), style)
	if err != nil {
		s.storeError(w, r, "create", err)
		return
	}
	sess, link := asked.Session, asked.Link
	if s.cfg.WithholdLink {
		link = ""
	}
	cr := CreateResponse{
		SessionID:   sess.ID,
		FeedbackURL: link,
		Status:      sess.Status,
		CreatedAt:   sess.CreatedAt,
		ExpiresAt:   sess.ExpiresAt,
		Timeout:     int64(req.Timeout / time.Second),
		Warnings:    req.Warnings,
	}
	writeBody(w, http.StatusCreated, cr.appendJSON)
}

// appendJSON appends r as encoding/json encodes it, and a newline.
func (r *CreateResponse) appendJSON(b []byte) []byte {
	b = append(b, '{')
	b = appendString(appendField(b, "sessionId"), r.SessionID)
	if r.FeedbackURL != "" {
		b = appendString(appendField(b, "feedbackUrl"), r.FeedbackURL)
	}
	b = appendString(appendField(b, "status"), string(r.Status))
	b = appendTime(appendField(b, "createdAt"), r.CreatedAt)
	b = appendTime(appendField(b, "expiresAt"), r.ExpiresAt)
	b = strconv.AppendInt(appendField(b, "timeout"), r.Timeout, 10)
	if len(r.Warnings) > 0 {
		b = append(appendField(b, "warnings"), '[')
		for i, w := range r.Warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, w)
		}
		b = append(b, ']')
	}
	return append(b, '}', '\n')
}

// writeState sends a question's state (status, cancel).
func writeState(w http.ResponseWriter, sess *store.Session) {
	st := feedback.StateOf(sess)
	writeBody(w, http.StatusOK, func(b []byte) []byte { return appendState(b, &st) })
}

// appendState appends st as encoding/json encodes it, and a newline.
func appendState(b []byte, st *StatusResponse) []byte {
	b = append(b, '{')
	b = appendString(appendField(b, "sessionId"), st.SessionID)
	b = appendString(appendField(b, "status"), string(st.Status))
	b = appendTime(appendField(b, "createdAt"), st.CreatedAt)
	b = appendTime(appendField(b, "expiresAt"), st.ExpiresAt)
	b = appendTime(appendField(b, "updatedAt"), st.UpdatedAt)
	return append(b, '}', '\n')
}

// appendJSON appends r as encoding/json encodes it, and a newline.
func (r *SubmitResponse) appendJSON(b []byte) []byte {
	b = append(b, '{')
	b = appendString(appendField(b, "sessionId"), r.SessionID)
	b = appendString(appendField(b, "status"), string(r.Status))
	b = appendTime(appendField(b, "submittedAt"), r.SubmittedAt)
	return append(b, '}', '\n')
}

// decodeAsk decodes a create (REST body or MCP arguments) with the
// optional link style, theme and lang; members named in extra are returned
// raw for the caller.
func decodeAsk(body []byte, lim validate.Limits, extra ...string) (*validate.CreateRequest, feedback.Style, map[string]json.RawMessage, *validate.Error) {
	req, rest, verr := validate.DecodeCreate(body, lim, append([]string{"theme", "lang"}, extra...)...)
	if verr != nil {
		return nil, feedback.Style{}, nil, verr
	}
	var st feedback.Style
	for name, dst := range map[string]*string{"theme": &st.Theme, "lang": &st.Lang} {
		if raw, ok := rest[name]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, dst); err != nil {
				return nil, st, nil, &validate.Error{Code: "invalid_request", Message: name + " must be a string"}
			}
		}
	}
	if err := feedback.CheckStyle(st); err != nil {
		return nil, st, nil, &validate.Error{Code: "invalid_request", Message: err.Error()}
	}
	return req, st, rest, nil
}

// Status handles GET /api/feedback/{id}/status.
func (s *Service) Status(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.ownedSession(w, r)
	if !ok {
		return
	}
	writeState(w, sess)
}

// Result handles GET /api/feedback/{id}/result.
func (s *Service) Result(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.ownedSession(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, ResultResponse{SessionID: sess.ID, Status: sess.Status, Result: withURLs(sess.Result, s.cfg.BaseURL(r), sess.ID)})
}

// Cancel handles POST /api/feedback/{id}/cancel: the owner withdraws a
// question (scope feedback:create), with the semantics of the MCP tool
// cancel_feedback, from the same core call: 200 with the state, idempotent;
// 409 once answered; 410 once expired; 404 for an unknown or someone else's
// id.
func (s *Service) Cancel(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticate(w, r, auth.ScopeCreate)
	if !ok {
		return
	}
	sess, err := s.core.Withdraw(r.Context(), OwnerOf(claims), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, "cancel", err)
		return
	}
	writeState(w, sess)
}

// Submit handles POST /api/feedback/{id}/submit. The person proves they hold
// the answer link with X-Feedback-Token; the owner may answer with a token
// that has the scope feedback:answer (not given by default: a dashboard's
// read token must not approve what an agent asked). The session id alone
// never allows an answer.
func (s *Service) Submit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !feedback.ValidID(id) {
		notFound(w)
		return
	}
	var owner *store.Owner
	if r.Header.Get("X-Feedback-Token") == "" && len(r.Header.Values("Authorization")) > 0 {
		claims, ok := s.authenticate(w, r, auth.ScopeAnswer)
		if !ok {
			return
		}
		o := OwnerOf(claims)
		owner = &o
	}
	body, ok := readJSONBody(w, r)
	if !ok {
		return
	}
	req, verr := validate.DecodeSubmit(body)
	if verr != nil {
		writeValidation(w, verr)
		return
	}
	var (
		sess *store.Session
		err  error
		via  = feedback.Via{How: feedback.ViaLink}
	)
	// The Peek forms: who may answer is checked exactly, the state may be
	// this instance's last known one; Answer's store write decides.
	if owner != nil {
		sess, err = s.core.PeekOwned(r.Context(), *owner, id)
		via = feedback.Via{How: feedback.ViaOwner, By: owner.Subject}
	} else {
		sess, err = s.core.PeekByToken(r.Context(), id, r.Header.Get("X-Feedback-Token"))
	}
	if err == nil {
		sess, err = s.core.Answer(r.Context(), sess, req, via)
	}
	if err != nil {
		s.answerFailed(w, r, err)
		return
	}
	sr := SubmitResponse{SessionID: sess.ID, Status: sess.Status, SubmittedAt: sess.Result.SubmittedAt}
	writeBody(w, http.StatusOK, sr.appendJSON)
}

// answerFailed answers for a failed answer: a validation error as 400, a
// store outcome by the one mapping.
func (s *Service) answerFailed(w http.ResponseWriter, r *http.Request, err error) {
	var verr *validate.Error
	if errors.As(err, &verr) {
		writeValidation(w, verr)
		return
	}
	s.storeError(w, r, "submit", err)
}

// Health handles GET /health. It is unauthenticated and says nothing about
// sessions; 503 tells a load balancer to route elsewhere.
func (s *Service) Health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]any{"status": "ok", "timestamp": s.cfg.Now().UTC(), "service": s.cfg.Service, "store": "ok"}
	status := http.StatusOK
	if err := s.core.Ping(ctx); err != nil {
		s.log.Warn("health check: store unreachable", zap.Error(err))
		body["status"], body["store"] = "degraded", "unreachable"
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}

// ResourceMetadata handles GET /.well-known/oauth-protected-resource[/path]
// (RFC 9728), so MCP clients can discover how to authenticate.
func (s *Service) ResourceMetadata(w http.ResponseWriter, r *http.Request) {
	resource := s.cfg.BaseURL(r)
	if rest := r.PathValue("rest"); rest != "" {
		resource += "/" + rest
	}
	md := map[string]any{
		"resource":                 resource,
		"bearer_methods_supported": []string{"header"},
		"scopes_supported":         []string{auth.ScopeCreate, auth.ScopeRead},
		"resource_name":            s.cfg.Service,
	}
	switch {
	case len(s.cfg.AuthServers) > 0:
		md["authorization_servers"] = s.cfg.AuthServers
	case s.cfg.Issuer != "":
		md["authorization_servers"] = []string{s.cfg.Issuer}
	}
	writeJSON(w, http.StatusOK, md)
}

// ownedSession authenticates for reading and loads the caller's session.
func (s *Service) ownedSession(w http.ResponseWriter, r *http.Request) (*store.Session, bool) {
	claims, ok := s.authenticate(w, r, auth.ScopeRead)
	if !ok {
		return nil, false
	}
	sess, err := s.core.Get(r.Context(), OwnerOf(claims), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, "get", err)
		return nil, false
	}
	return sess, true
}

// Authenticate checks the bearer token of r for scope ("" = any scope) and
// answers 401/403 itself when it fails. MCP and WebSocket endpoints use it too.
func (s *Service) Authenticate(w http.ResponseWriter, r *http.Request, scope string) (*auth.Claims, bool) {
	return s.authenticate(w, r, scope)
}

func (s *Service) authenticate(w http.ResponseWriter, r *http.Request, scope string) (*auth.Claims, bool) {
	claims, aerr := s.verify(r)
	if aerr != nil && aerr.Temporary() {
		// A token that could not be checked (an access token of this site's
		// authorization server while the store is away, or any token before
		// the identity provider's keys have loaded): it may be fine, so no
		// 401 (which would send the client through sign-in again).
		if aerr.Reason == "store" {
			s.cfg.Observer.StoreFailed("token")
		} else {
			s.cfg.Observer.AuthFailed(aerr.Reason)
		}
		s.log.Error("checking a token failed", zap.String("reason", aerr.Reason), zap.Error(aerr.Err))
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "unavailable", aerr.Description())
		return nil, false
	}
	if aerr != nil {
		s.cfg.Observer.AuthFailed(aerr.Reason)
		s.log.Info("authentication failed",
			zap.String("reason", aerr.Reason), zap.String("remote_addr", r.RemoteAddr),
			zap.String("method", r.Method), zap.String("path", r.URL.Path))
		challenge := fmt.Sprintf("Bearer resource_metadata=%s", strconv.Quote(s.cfg.BaseURL(r)+"/.well-known/oauth-protected-resource"))
		if len(s.cfg.AuthServers) > 0 {
			// The scopes to ask the authorization server for (MCP: a 401
			// SHOULD name them): the whole set at once, so one sign-in does.
			need := scope
			if need == "" || need == auth.ScopeCreate || need == auth.ScopeRead {
				need = auth.ScopeCreate + " " + auth.ScopeRead
			}
			challenge += fmt.Sprintf(", scope=%q", need)
		}
		if aerr.Code != "" {
			challenge += fmt.Sprintf(", error=%q, error_description=%q", aerr.Code, aerr.Description())
		}
		w.Header().Set("WWW-Authenticate", challenge)
		// A malformed header stays 401, so that an MCP client starts its
		// authorization flow; two headers are a broken request (400).
		status, code := http.StatusUnauthorized, "unauthorized"
		if aerr.Reason == "duplicate_header" {
			status, code = http.StatusBadRequest, "invalid_request"
		}
		WriteError(w, status, code, aerr.Description())
		return nil, false
	}
	if scope != "" && !claims.HasScope(scope) {
		s.cfg.Observer.AuthFailed("insufficient_scope")
		s.log.Info("authentication failed",
			zap.String("reason", "insufficient_scope"), zap.String("remote_addr", r.RemoteAddr),
			zap.String("sub", claims.Subject), zap.String("path", r.URL.Path))
		// Step-up (MCP): the scopes the token has plus the one it lacks, so
		// a new authorization asks for everything at once.
		want := scope
		if claims.Scope != nil && *claims.Scope != "" {
			want = *claims.Scope + " " + scope
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer error=\"insufficient_scope\", scope=%q, resource_metadata=%s, error_description=%q",
			want, strconv.Quote(s.cfg.BaseURL(r)+"/.well-known/oauth-protected-resource"), "this token's scope does not include "+scope))
		WriteError(w, http.StatusForbidden, "insufficient_scope", "this token's scope does not include "+scope)
		return nil, false
	}
	return claims, true
}

// verify checks the bearer token of r: an access token of this site's
// authorization server (recognised by its prefix; a JWT never has it) by
// a store lookup, anything else by the JWT verifier. Two Authorization
// headers are refused (400): it is not a list header, and a proxy in
// front might read the other one.
func (s *Service) verify(r *http.Request) (*auth.Claims, *auth.Error) {
	if s.cfg.Tokens == nil {
		return s.cfg.Verifier.VerifyRequest(r.Header)
	}
	tok, aerr := auth.BearerFrom(r.Header)
	if aerr != nil {
		return nil, aerr
	}
	if s.cfg.Tokens.Owns(tok) {
		return s.cfg.Tokens.Check(r.Context(), tok)
	}
	return s.cfg.Verifier.Verify(tok)
}

// storeError answers a request whose store operation op failed with err:
// counted and logged when unexpected (storeFailed), then the status that
// says what happened (writeStoreError).
func (s *Service) storeError(w http.ResponseWriter, r *http.Request, op string, err error) {
	s.storeFailed(r, op, err)
	writeStoreError(w, err)
}

// storeFailed counts and logs a failure of the store; expected outcomes
// (not found, conflict, gone, quota) are not failures.
func (s *Service) storeFailed(r *http.Request, op string, err error) {
	if errors.Is(err, store.ErrUnavailable) || !feedback.IsExpected(err) {
		s.cfg.Observer.StoreFailed(op)
		s.log.Error("session store failed", zap.String("op", op), zap.String("path", r.URL.Path), zap.Error(err))
	}
}
