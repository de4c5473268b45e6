package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Stateless clients (protocol 2026-07-28, SEP-2322 multi round-trip
// requests). They have no session, so the server cannot send them an
// elicitation request while a call waits. Instead a waiting call that
// would elicit answers at once with an input-required result carrying the
// elicitation (URL mode: the answer link; form mode: the options) and a
// requestState; the client shows it to its user and calls again with the
// response and the state. The retry then submits an accepted form answer
// through the core's exactly-once answer path (Via elicitation) and waits
// for the answer as any call does.
//
// requestState is HMAC-signed (mcp-go does not sign it): it names the
// question, the tool, the identity and the mode, and a retry whose state
// does not verify for this identity is refused before the tool runs. The
// key is derived from the site's secret, so a retry may reach any instance
// sharing it; without one (JWKS-only sites) each process has its own key.

const (
	// elicitID is the key of the one input request (the person's answer).
	elicitID = "answer"
	// stateVersion prefixes a signed state, so the format can change.
	stateVersion = "fbs1."
	// maxRequestState bounds a state before it is decoded.
	maxRequestState = 4096
)

// requestState is what a signed requestState says.
type requestState struct {
	Question string `json:"q"`
	Tool     string `json:"t"`
	Issuer   string `json:"iss"`
	Subject  string `json:"sub"`
	Mode     string `json:"m"`           // url or form
	Until    int64  `json:"u"`           // unix seconds: when the wait ends
	Link     string `json:"l,omitempty"` // the answer link (the client got it in the elicitation)
	Expires  int64  `json:"e"`           // unix seconds: the question's deadline
}

var errBadState = errors.New("requestState failed its integrity check: it was not issued by this server for this identity and tool, or it was altered or has expired; call the tool again without requestState")

// stateKey is the key requestStates are signed with.
func (m *MCP) stateKey(rq *mcpRequest) []byte {
	if len(rq.cfg.StateKey) > 0 {
		return rq.cfg.StateKey
	}
	return m.localStateKey
}

func signState(key []byte, st requestState) (string, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("encode requestState: %w", err)
	}
	body := base64.RawURLEncoding.EncodeToString(b)
	return stateVersion + body + "." + stateMAC(key, body), nil
}

func stateMAC(key []byte, body string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("requestState\x00" + body))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// verifyState checks a requestState's signature, identity, tool and age.
func verifyState(key []byte, raw string, o store.Owner, tool string, now time.Time) (*requestState, error) {
	rest, ok := strings.CutPrefix(raw, stateVersion)
	if !ok || len(raw) > maxRequestState || len(key) == 0 {
		return nil, errBadState
	}
	body, mac, ok := strings.Cut(rest, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(stateMAC(key, body))) {
		return nil, errBadState
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return nil, errBadState
	}
	var st requestState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, errBadState
	}
	if st.Issuer != o.Issuer || st.Subject != o.Subject || st.Tool != tool || now.Unix() > st.Expires {
		return nil, errBadState
	}
	return &st, nil
}

// checkRequestState is the transport-level check of a 2026-07-28 tools/call
// that carries a requestState: one that does not verify is refused with
// -32602 (HTTP 400) before mcp-go runs the tool. It reports whether it
// answered the request.
func (m *MCP) checkRequestState(w http.ResponseWriter, r *http.Request, rq *mcpRequest, body []byte) bool {
	if !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) {
		return false
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name         string          `json:"name"`
			RequestState json.RawMessage `json:"requestState"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &msg) != nil || msg.Method != methodToolsCall || len(msg.Params.RequestState) == 0 {
		return false
	}
	var raw string
	if err := json.Unmarshal(msg.Params.RequestState, &raw); err == nil && raw == "" {
		return false
	}
	if _, err := verifyState(m.stateKey(rq), raw, OwnerOf(rq.claims), msg.Params.Name, time.Now()); err != nil {
		rq.svc.log.Info("mcp: requestState refused", zap.String("sub", rq.claims.Subject), zap.String("tool", msg.Params.Name), zap.String("remote_addr", r.RemoteAddr))
		b, _ := rpcBytes(msg.ID, nil, invalidParams("%s", err.Error()))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(b)
		return true
	}
	return false
}

// inputRequired is a waiting call's elicitation for a 2026-07-28 client:
// the input-required result, or nil when there is nothing to elicit (off,
// the client did not declare elicitation, no link to send) and the call
// just waits.
func (m *MCP) inputRequired(ctx context.Context, rq *mcpRequest, req mcp.CallToolRequest, sess *store.Session, until time.Time, link string) *mcp.CallToolResult {
	if rq.cfg.Elicitation == ElicitationOff || ctx.Value(elicitedKey{}) != nil {
		return nil
	}
	info := server.RequestProtocolInfoFromContext(ctx)
	if info == nil || info.ClientCapabilities == nil || info.ClientCapabilities.Elicitation == nil {
		return nil
	}
	st := requestState{Question: sess.ID, Tool: req.Params.Name, Issuer: rq.claims.Issuer, Subject: rq.claims.Subject,
		Until: until.Unix(), Link: link, Expires: sess.ExpiresAt.Unix()}
	var params mcp.ElicitationParams
	switch elicitMode(rq.cfg.Elicitation, info.ClientCapabilities.Elicitation, sess, link) {
	case ElicitationForm:
		st.Mode = ElicitationForm
		params = mcp.ElicitationParams{Mode: mcp.ElicitationModeForm, Message: sess.Message, RequestedSchema: formSchema(sess)}
	case ElicitationURL:
		st.Mode = ElicitationURL
		params = mcp.ElicitationParams{Mode: mcp.ElicitationModeURL, ElicitationID: sess.ID,
			URL: link, Message: "The agent is asking you a question. Open this page to answer it:\n\n" + clip(sess.Message, 300)}
	default:
		return nil
	}
	state, err := signState(m.stateKey(rq), st)
	if err != nil {
		return nil
	}
	rq.svc.log.Debug("mcp: elicitation sent as an input-required result", zap.String("session", sess.ID), zap.String("mode", st.Mode))
	return server.NewInputRequestBuilder(state).Elicit(elicitID, params).ToolResult()
}

// elicitedKey marks a retry whose elicitation has been answered, so that
// the wait does not ask again.
type elicitedKey struct{}

// stateless handles the retry of a 2026-07-28 call that carries a
// requestState (interactive_feedback and get_feedback_result): it never
// creates a second question. It reports whether it handled the call.
func (m *MCP) stateless(ctx context.Context, rq *mcpRequest, req mcp.CallToolRequest) (*mcp.CallToolResult, bool) {
	if !server.IsModernRequest(ctx) || req.Params.RequestState == "" {
		return nil, false
	}
	owner := OwnerOf(rq.claims)
	st, err := verifyState(m.stateKey(rq), req.Params.RequestState, owner, req.Params.Name, time.Now())
	if err != nil {
		// checkRequestState refuses these before the tool runs; this is the
		// same check for a transport that did not.
		return toolError("%s", err.Error()), true
	}
	sess, err := rq.svc.core.Get(ctx, owner, st.Question)
	if err != nil {
		return storeToolError(rq, "get", err), true
	}
	resp := server.ElicitationResponse(req.Params.InputResponses, elicitID)
	if resp == nil && sess.Status == store.StatusPending {
		// No answer to the elicitation: ask again (SEP-2322 re-requests
		// missing input rather than failing).
		if res := m.inputRequired(ctx, rq, req, sess, time.Unix(st.Until, 0), st.Link); res != nil {
			return res, true
		}
	}
	log := rq.svc.log.With(zap.String("session", sess.ID))
	if resp != nil {
		log.Debug("mcp: input-required elicitation answered", zap.String("action", string(resp.Action)), zap.String("mode", st.Mode))
		if resp.Action == mcp.ElicitationResponseActionAccept && st.Mode == ElicitationForm && sess.Status == store.StatusPending {
			if err := m.answerForm(ctx, rq, sess.ID, resp.Content); err != nil {
				log.Info("mcp: form elicitation answer not stored", zap.Error(err))
				if errors.Is(err, store.ErrUnavailable) {
					return storeToolError(rq, "submit", err), true
				}
				if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrGone) {
					return toolError("the form answer was not accepted (%v); the user can still answer at the link until the question expires", err), true
				}
			}
			if cur, err := rq.svc.core.Get(ctx, owner, sess.ID); err == nil {
				sess = cur
			}
		}
	}
	if sess.Status.Terminal() {
		return answerResult(ctx, rq, sess, st.Link, false), true
	}
	ctx = context.WithValue(ctx, elicitedKey{}, true)
	res, err := m.waitResult(ctx, rq, req, sess, time.Unix(st.Until, 0), st.Link, nil)
	if err != nil {
		return toolError("the wait ended: %v", err), true
	}
	return res, true
}
