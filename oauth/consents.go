package oauth

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
	"github.com/mcpfeedback/caddy-mcp-feedback/ui"
)

// consents handles /oauth/consents: GET lists the clients the signed-in
// person has allowed; each has a button that revokes the consent and
// every grant the client holds for the person. The POST goes through
// decide (the same single-use CSRF token and cross-site check).
func (s *Server) consents(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		s.decide(w, r)
		return
	}
	person, err := s.cfg.Login.Person(r)
	switch {
	case errors.Is(err, identity.ErrNotSignedIn):
		s.cfg.Login.SignIn(w, r, s.sitePath("/oauth/consents"))
		return
	case err != nil:
		s.log.Error("oauth: checking the sign-in failed", zap.Error(err))
		s.errorPage(w, r, http.StatusServiceUnavailable, "your sign-in could not be checked; try again in a moment")
		return
	}
	ctx, cancel := storeCtx(r)
	defer cancel()
	ids, err := s.kv.Members(ctx, keyConsents(person.ID))
	if err != nil {
		s.log.Error("oauth: listing consents failed", zap.Error(err))
		s.errorPage(w, r, http.StatusServiceUnavailable, "the server cannot reach its store; try again in a moment")
		return
	}
	slices.Sort(ids)
	d := s.pageData(r)
	d.Mode = "consents"
	d.Person = displayName(person)
	for _, id := range ids {
		var c consent
		if err := s.loadJSON(ctx, keyConsent(person.ID, id), &c); err != nil {
			continue
		}
		name := c.ClientName
		if name == "" {
			name = c.ClientID
		}
		d.Clients = append(d.Clients, ui.OAuthClient{ID: c.ClientID, Name: name, Scopes: c.Scope, Granted: c.Granted})
	}
	if len(d.Clients) > 0 {
		d.CSRF = secret("")
		if err := s.putJSON(ctx, keyPending(d.CSRF), pending{Sub: person.ID, Consents: true}, PendingTTL); err != nil {
			s.log.Error("oauth: storing a page token failed", zap.Error(err))
			s.errorPage(w, r, http.StatusServiceUnavailable, "the server cannot reach its store; try again in a moment")
			return
		}
	}
	d.Action = s.sitePath("/oauth/consents")
	s.setPageHeaders(w, r, "")
	if err := ui.RenderOAuth(w, d); err != nil {
		s.log.Warn("oauth: rendering the consents page failed", zap.Error(err))
	}
}

// revokeConsent forgets a person's consent to a client and revokes every
// grant the client holds for them, then shows the list again.
func (s *Server) revokeConsent(w http.ResponseWriter, r *http.Request, ctx context.Context, person identity.Person, clientID string) {
	if clientID == "" {
		s.errorPage(w, r, http.StatusBadRequest, "client_id is missing")
		return
	}
	unavailable := func(err error) {
		s.log.Error("oauth: revoking a consent failed", zap.Error(err))
		s.errorPage(w, r, http.StatusServiceUnavailable, "the server cannot reach its store; nothing was revoked for sure, try again in a moment")
	}
	// The grants first, while the consent still lists the client: if this
	// fails the person sees the client still there and can try again.
	grants, err := s.kv.Members(ctx, keyGrantsOf(person.ID, clientID))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		unavailable(err)
		return
	}
	for _, g := range grants {
		if err := s.revokeGrant(ctx, g, "consent revoked by the person"); err != nil {
			unavailable(err)
			return
		}
	}
	if err := s.kv.Delete(ctx, keyConsent(person.ID, clientID)); err != nil {
		unavailable(err)
		return
	}
	if err := s.kv.RemoveMember(ctx, keyConsents(person.ID), clientID); err != nil {
		unavailable(err)
		return
	}
	http.Redirect(w, r, s.sitePath("/oauth/consents"), http.StatusSeeOther)
}
