package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// CreateResponse is the body of a successful create.
type CreateResponse struct {
	SessionID   string       `json:"sessionId"`
	FeedbackURL string       `json:"feedbackUrl"`
	Status      store.Status `json:"status"`
	CreatedAt   time.Time    `json:"createdAt"`
	ExpiresAt   time.Time    `json:"expiresAt"`
	Timeout     int64        `json:"timeout"`
}

// StatusResponse is the body of GET …/status.
type StatusResponse struct {
	SessionID string       `json:"sessionId"`
	Status    store.Status `json:"status"`
	CreatedAt time.Time    `json:"createdAt"`
	ExpiresAt time.Time    `json:"expiresAt"`
	UpdatedAt time.Time    `json:"updatedAt"`
}

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
	body, ok := readJSONBody(w, r)
	if !ok {
		return
	}
	req, _, verr := validate.DecodeCreate(body, s.cfg.Limits)
	if verr != nil {
		writeValidation(w, verr)
		return
	}
	created, err := s.CreateSession(r.Context(), OwnerOf(claims), req, s.cfg.BaseURL(r))
	if err != nil {
		s.storeFailed(r, "create", err)
		writeStoreError(w, err)
		return
	}
	sess := created.Session
	writeJSON(w, http.StatusCreated, CreateResponse{
		SessionID:   sess.ID,
		FeedbackURL: created.FeedbackURL,
		Status:      sess.Status,
		CreatedAt:   sess.CreatedAt,
		ExpiresAt:   sess.ExpiresAt,
		Timeout:     int64(req.Timeout / time.Second),
	})
}

// Status handles GET /api/feedback/{id}/status.
func (s *Service) Status(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.ownedSession(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, StatusResponse{
		SessionID: sess.ID, Status: sess.Status,
		CreatedAt: sess.CreatedAt, ExpiresAt: sess.ExpiresAt, UpdatedAt: sess.UpdatedAt,
	})
}

// Result handles GET /api/feedback/{id}/result.
func (s *Service) Result(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.ownedSession(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, ResultResponse{SessionID: sess.ID, Status: sess.Status, Result: sess.Result})
}

// Cancel handles POST /api/feedback/{id}/cancel: the owner withdraws a
// question (scope feedback:create), with the semantics of the MCP tool
// cancel_feedback: 200 with the state, idempotent; 409 once answered; 410
// once expired; 404 for an unknown or someone else's id.
func (s *Service) Cancel(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticate(w, r, auth.ScopeCreate)
	if !ok {
		return
	}
	sess, err := s.SessionFor(r.Context(), OwnerOf(claims), r.PathValue("id"))
	if err == nil {
		sess, err = s.cfg.Store.Cancel(r.Context(), sess.ID)
	}
	if err != nil {
		s.storeFailed(r, "cancel", err)
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, StatusResponse{
		SessionID: sess.ID, Status: sess.Status,
		CreatedAt: sess.CreatedAt, ExpiresAt: sess.ExpiresAt, UpdatedAt: sess.UpdatedAt,
	})
}

// Submit handles POST /api/feedback/{id}/submit. The person proves they hold
// the answer link with X-Feedback-Token; the owner's JWT is accepted too.
// The session id alone never allows an answer.
func (s *Service) Submit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		notFound(w)
		return
	}
	var owner *store.Owner
	if r.Header.Get("X-Feedback-Token") == "" && r.Header.Get("Authorization") != "" {
		claims, ok := s.authenticate(w, r, "")
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
	sess, err := s.cfg.Store.Get(r.Context(), id)
	if err != nil {
		s.storeFailed(r, "get", err)
		writeStoreError(w, err)
		return
	}
	if owner != nil && sess.Owner != *owner || owner == nil && !sess.CheckToken(r.Header.Get("X-Feedback-Token")) {
		notFound(w)
		return
	}
	result, err := s.SubmitAnswer(r.Context(), sess, req)
	if err != nil {
		var verr *validate.Error
		if errors.As(err, &verr) {
			writeValidation(w, verr)
			return
		}
		s.storeFailed(r, "submit", err)
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, SubmitResponse{SessionID: result.ID, Status: result.Status, SubmittedAt: result.Result.SubmittedAt})
}

// SubmitAnswer checks an answer against the session it answers and stores
// it exactly once. The caller has already checked who is answering.
func (s *Service) SubmitAnswer(ctx context.Context, sess *store.Session, req *validate.SubmitRequest) (*store.Session, error) {
	// A retry of the accepted answer gets the same success; any other answer
	// to a closed question gets the store's verdict, before validation, so a
	// late answer learns the question is closed rather than what was wrong
	// with it.
	if sess.Status != store.StatusPending {
		if sess.Status == store.StatusSubmitted && req.Nonce != "" && req.Nonce == sess.Nonce {
			return sess, nil
		}
		if sess.Status == store.StatusSubmitted {
			return nil, store.ErrConflict
		}
		return nil, store.ErrGone
	}
	if verr := validate.CheckAnswer(req, sess.PredefinedOptions, sess.MultiSelect, sess.AllowFreeText); verr != nil {
		return nil, verr
	}
	return s.cfg.Store.Submit(ctx, sess.ID, store.Answer{SelectedOptions: req.SelectedOptions, FreeText: req.FreeText, Nonce: req.Nonce})
}

// Health handles GET /health. It is unauthenticated and says nothing about
// sessions; 503 tells a load balancer to route elsewhere.
func (s *Service) Health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]any{"status": "ok", "timestamp": s.cfg.Now().UTC(), "service": s.cfg.Service, "store": "ok"}
	status := http.StatusOK
	if err := s.cfg.Store.Ping(ctx); err != nil {
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
	if s.cfg.Issuer != "" {
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
	sess, err := s.SessionFor(r.Context(), OwnerOf(claims), r.PathValue("id"))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.storeFailed(r, "get", err)
		}
		writeStoreError(w, err)
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
	claims, aerr := s.cfg.Verifier.VerifyHeader(r.Header.Get("Authorization"))
	if aerr != nil {
		s.cfg.Observer.AuthFailed(aerr.Reason)
		s.log.Info("authentication failed",
			zap.String("reason", aerr.Reason), zap.String("remote_addr", r.RemoteAddr),
			zap.String("method", r.Method), zap.String("path", r.URL.Path))
		challenge := fmt.Sprintf("Bearer resource_metadata=%s", strconv.Quote(s.cfg.BaseURL(r)+"/.well-known/oauth-protected-resource"))
		if aerr.Code != "" {
			challenge += fmt.Sprintf(", error=%q, error_description=%q", aerr.Code, aerr.Description())
		}
		w.Header().Set("WWW-Authenticate", challenge)
		WriteError(w, http.StatusUnauthorized, "unauthorized", aerr.Description())
		return nil, false
	}
	if scope != "" && !claims.HasScope(scope) {
		s.cfg.Observer.AuthFailed("insufficient_scope")
		s.log.Info("authentication failed",
			zap.String("reason", "insufficient_scope"), zap.String("remote_addr", r.RemoteAddr),
			zap.String("sub", claims.Subject), zap.String("path", r.URL.Path))
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer error=\"insufficient_scope\", scope=%q, resource_metadata=%s",
			scope, strconv.Quote(s.cfg.BaseURL(r)+"/.well-known/oauth-protected-resource")))
		WriteError(w, http.StatusForbidden, "insufficient_scope", "this token's scope does not include "+scope)
		return nil, false
	}
	return claims, true
}

func (s *Service) storeFailed(r *http.Request, op string, err error) {
	if errors.Is(err, store.ErrUnavailable) || !isExpected(err) {
		s.cfg.Observer.StoreFailed(op)
		s.log.Error("session store failed", zap.String("op", op), zap.String("path", r.URL.Path), zap.Error(err))
	}
}

func isExpected(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrGone) || errors.Is(err, store.ErrQuota)
}
