// Package mcpfeedback is a Caddy HTTP handler that lets AI agents ask a
// person a question and get the answer back: over MCP, over a REST API, and
// through an answer page the person opens from a link.
//
// This file is the map of the module: the configuration (each field's doc
// comment is its user documentation), the lifecycle, and the route table.
package mcpfeedback

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
	"github.com/mcpfeedback/caddy-mcp-feedback/identity"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
	"github.com/mcpfeedback/caddy-mcp-feedback/oauth"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the `mcp_feedback` HTTP handler. It serves its own routes (see
// routes) and passes every other request to the next handler.
type Handler struct {
	// JWTSecret is the HMAC-SHA256 key that agents' bearer tokens are signed
	// with; at least 32 bytes. Write it as a placeholder such as
	// `{env.JWT_SECRET}`: it is resolved when the config loads, so the secret
	// never appears in adapted JSON or autosave.json. Required: there is no
	// anonymous mode.
	JWTSecret string `json:"jwt_secret,omitempty"`

	// JWTIssuer, when set, is required as the `iss` of every token, and is
	// listed as the authorization server in the resource metadata.
	JWTIssuer string `json:"jwt_issuer,omitempty"`

	// JWTAudience, when set, must be among the `aud` of every token. When
	// unset, a token that carries any `aud` is refused: it was minted for
	// another service.
	JWTAudience string `json:"jwt_audience,omitempty"`

	// JWTMaxTTL caps the lifetime of an accepted token (exp − iat, or the
	// time left when it has no iat); `caddy mcp-feedback token` mints no
	// longer ones either. Default: 720h (30 days).
	JWTMaxTTL caddy.Duration `json:"jwt_max_ttl,omitempty"`

	// JWTDeniedJTIs revokes single tokens by their `jti` (printed by
	// `caddy mcp-feedback token --print-jti`) without rotating the secret.
	JWTDeniedJTIs []string `json:"jwt_denied_jtis,omitempty"`

	// JWTPreviousSecrets are secrets that verify tokens but sign none, for
	// rotating jwt_secret without cutting agents off: make the new secret
	// jwt_secret, list the old one here until its tokens have expired.
	// Each at least 32 bytes; placeholders such as `{env.OLD_JWT_SECRET}`.
	// A token's `kid` (minted tokens carry the first 8 hex characters of
	// their secret's SHA-256) picks its secret; a token without one is
	// tried against every secret, current first.
	JWTPreviousSecrets []string `json:"jwt_previous_secrets,omitempty"`

	// JWTJWKS is the https URL of an identity provider's JWKS. With it,
	// access tokens signed by the provider (RS256/384/512, PS256/384/512,
	// ES256/384/512, EdDSA; the algorithm is the key's, never the
	// token's) are accepted; jwt_issuer and jwt_audience are then required.
	// The keys are refreshed hourly and refetched when a token names an
	// unknown `kid`, at most once a minute. With jwt_secret too, HS256
	// tokens are checked against the secret(s) and all others against the
	// JWKS (a migration). Use jwt_oidc_issuer instead to find the URL by
	// OpenID Connect discovery.
	JWTJWKS string `json:"jwt_jwks,omitempty"`

	// JWTOIDCIssuer is an OpenID Connect issuer URL (exactly as in its
	// tokens' `iss`): the JWKS is the `jwks_uri` of
	// `<issuer>/.well-known/openid-configuration`, and jwt_issuer defaults
	// to it. Otherwise as jwt_jwks, which it excludes.
	JWTOIDCIssuer string `json:"jwt_oidc_issuer,omitempty"`

	// JWTJWKSInsecureLoopbackForTests lets jwt_jwks and jwt_oidc_issuer be
	// plain http:// when their host is 127.0.0.1, ::1 or localhost. For
	// tests only; a warning is logged when it is on.
	JWTJWKSInsecureLoopbackForTests bool `json:"jwt_jwks_insecure_loopback_for_tests,omitempty"`

	// PublicURL is the base of answer links, e.g. `https://feedback.example.com`
	// (with a path when the module is mounted under one). When unset it is
	// derived from each request's scheme, host and stripped path prefix.
	PublicURL string `json:"public_url,omitempty"`

	// StoreRaw configures where sessions live: `memory` (the default; one
	// process) or `redis` (production, and many instances).
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.mcp_feedback.stores inline_key=backend"`

	// DefaultTimeout is how long a question waits for an answer when the
	// agent does not say. Default: 5m.
	DefaultTimeout caddy.Duration `json:"default_timeout,omitempty"`

	// MinTimeout is the shortest timeout an agent may ask for. Default: 30s.
	MinTimeout caddy.Duration `json:"min_timeout,omitempty"`

	// MaxTimeout is the longest timeout an agent may ask for, and how long
	// a question with onTimeout keep stays open; at most 168h (7 days).
	// Default: 1h.
	MaxTimeout caddy.Duration `json:"max_timeout,omitempty"`

	// TimeoutOutOfRange is what a timeout outside min_timeout–max_timeout
	// gets: `clamp` (the default) moves it to the nearest bound and says
	// so in the create's warnings (clients such as Cursor send 1); `reject`
	// refuses it with 400.
	TimeoutOutOfRange string `json:"timeout_out_of_range,omitempty"`

	// MaxMessageLength caps the question, in characters. Default: 1000.
	MaxMessageLength int `json:"max_message_length,omitempty"`

	// MaxOptions caps the number of predefined options. Default: 10.
	MaxOptions int `json:"max_options,omitempty"`

	// MaxOptionLength caps each option, in characters. Default: 100.
	MaxOptionLength int `json:"max_option_length,omitempty"`

	// MaxQuestions caps the questions of one form (`questions`). Default: 10.
	MaxQuestions int `json:"max_questions,omitempty"`

	// MaxImages caps the images an asker may attach to one question, from 1
	// to 4 (each at most 1 MiB); -1 (`off` in the Caddyfile) refuses
	// images. Default: 4.
	MaxImages int `json:"max_images,omitempty"`

	// Retention is how long a finished session stays readable after its
	// deadline (for result lookups and the answer page). Default: 1h.
	Retention caddy.Duration `json:"retention,omitempty"`

	// MaxPendingPerSubject caps the questions one token subject may have
	// waiting at once, across every instance sharing the store; past it,
	// creates get 429 with Retry-After. Default: 100; -1 turns it off.
	MaxPendingPerSubject int `json:"max_pending_per_subject,omitempty"`

	// CreatesPerMinute caps the questions one subject may create in any
	// 60 s; past it, creates get 429 with Retry-After. Default: 60; -1
	// turns it off.
	CreatesPerMinute int `json:"creates_per_minute,omitempty"`

	// Notify lists webhooks told about each question: created (with the
	// answer link, so a chat or push service can reach the person),
	// expired and cancelled. Delivery is signed, retried with backoff and
	// never delays the request that created the question.
	Notify []WebhookConfig `json:"notify,omitempty"`

	// Ntfy lists ntfy topics (`notify ntfy <topic-url> { token … }`) each
	// new question is published to, with a button per option (up to 3)
	// that answers it from the phone with a one-tap answer token, and one
	// that opens it. Needs public_url.
	Ntfy []NtfyConfig `json:"ntfy,omitempty"`

	// Push turns on Web Push (`push { … }`): people turn notifications on
	// per device in the inbox, and each new question of theirs (owner
	// subject = their id) reaches those devices with a button per option
	// (up to 2) that answers it; answered, withdrawn and expired questions
	// close their notification. Needs public_url.
	Push *PushConfig `json:"push,omitempty"`

	// AllowedOrigins lists other origins, each `scheme://host[:port]` (e.g.
	// `https://app.example.com`), whose pages may open the live-update
	// WebSocket and post answers. The site's own origin is always allowed;
	// anything else is refused (403), so another site cannot act with a
	// visitor's browser.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// WSMaxPerSession caps the WebSockets open on one session (answer pages
	// and apps together). Default: 10.
	WSMaxPerSession int `json:"ws_max_per_session,omitempty"`

	// WSMaxPerSubject caps the WebSockets one token subject (`sub`) has
	// open across all its sessions. Default: 20.
	WSMaxPerSubject int `json:"ws_max_per_subject,omitempty"`

	// Elicitation is how a waiting MCP call may also reach the person
	// through the agent's own client, when that client declares it can:
	// `url` (the default) asks the client to open the answer link, `form`
	// asks questions with predefined options in the client's own form (the
	// answer is stored like one from the page; other questions use the
	// link), and `off` sends nothing.
	Elicitation string `json:"elicitation,omitempty"`

	// MCPMaxSessionsPerSubject caps the MCP sessions (SSE streams and
	// Streamable HTTP sessions) one token subject may hold at once; past
	// it, new sessions get 429. Default: 50.
	MCPMaxSessionsPerSubject int `json:"mcp_max_sessions_per_subject,omitempty"`

	// MCPMaxCallsPerSubject caps the MCP tool calls one token subject may
	// have in flight at once (a waiting call holds a connection for up to
	// max_timeout); past it, a call gets a tool error. Default: 100.
	MCPMaxCallsPerSubject int `json:"mcp_max_calls_per_subject,omitempty"`

	// LinkToAgent says whether the agent gets the answer link (with its
	// capability token) from create and interactive_feedback. Set it
	// false (`link_to_agent off`) when "a person answered"
	// must hold even against a dishonest agent: the agent then gets only
	// the session id, the person gets the link from a webhook (and, later,
	// an inbox or push), and elicitation through the agent's client is off.
	// Default: on.
	LinkToAgent *bool `json:"link_to_agent,omitempty"`

	// Inbox turns on /inbox (`inbox`): a signed-in person's open and
	// recently finished questions (those whose owner subject is their id,
	// or addressed to them: allow_addressing),
	// answered inline, live, installable as an app, where notifications
	// (push) are turned on per device. Needs login. Each question then
	// costs one more store write (the per-person index). Off unless set.
	Inbox bool `json:"inbox,omitempty"`

	// AllowAddressing lets an agent address a question to other people
	// (`allow_addressing`): create (REST and MCP) then takes `to`, up to
	// 10 person ids (the id a person signs in with), whose inboxes show
	// the question and who may answer it there or from a notification;
	// the agent's owner still owns it, and the result records who
	// answered (answeredBy). Needs inbox. Without it, `to` is refused with
	// a 400. Default: off.
	AllowAddressing bool `json:"allow_addressing,omitempty"`

	// Login turns on sign-in, so that the module knows who the person in
	// front of a browser is: `caddy` trusts Caddy's own authentication in
	// front of the handler, `oidc` signs people in with an OpenID
	// provider. It needs public_url (https, or http on loopback): the
	// provider's callback and the sign-in cookies are bound to one origin.
	// Off unless set.
	Login *LoginConfig `json:"login,omitempty"`

	// Attachments are the files a person may attach to an answer (pasted,
	// dropped or picked on the answer page): on by default, because it is
	// what people ask for most after being reached at all, and every file
	// is proven by its bytes, kept only with its question and never served
	// so that it could run. `attachments off` (Off) refuses them.
	Attachments *AttachmentsConfig `json:"attachments,omitempty"`

	// OAuthRegistrationsPerHour caps Dynamic Client Registrations (RFC
	// 7591, at /oauth/register) from one client address per hour, across
	// every instance sharing the store; registrations nobody uses expire
	// after a day. Only with `login`, which turns on the OAuth
	// authorization server. Default: 20; -1 turns it off.
	OAuthRegistrationsPerHour int `json:"oauth_registrations_per_hour,omitempty"`

	// OAuthCIMDInsecureLoopbackForTests lets the authorization server fetch
	// Client ID Metadata Documents over plain http from loopback addresses
	// (normally only https to public addresses). For tests only; a warning
	// is logged when it is on.
	OAuthCIMDInsecureLoopbackForTests bool `json:"oauth_cimd_insecure_loopback_for_tests,omitempty"`

	svc    *handlers.Service
	human  *handlers.Human
	mux    *http.ServeMux
	shared *shared
	logger *zap.Logger
	// stopHooks run when this handler's configuration stops: on a reload
	// (exiting false) or a process exit (exiting true). Long-lived streams
	// end here, because Caddy waits for them before its own context ends.
	stopHooks []func(exiting bool)
	notifier  *notify.Notifier
	verifier  *auth.Verifier
	reach     *reacher
	inbox     *handlers.Inbox
	// login is the configured sign-in (nil without `login`); the OAuth
	// authorization server and the inbox ask it who the person is.
	login identity.Login
	// oauth is the authorization server for MCP clients, on with login.
	oauth *oauth.Server
}

// AttachmentsConfig is the `attachments` block: `attachments off`, or
// `attachments { max_size 5MiB; max_files 5; types …; max_bytes_per_subject 100MiB }`.
type AttachmentsConfig struct {
	// Off refuses attachments (the page offers none, uploads get 403).
	Off bool `json:"off,omitempty"`

	// MaxSize caps one file, in bytes (the Caddyfile takes `5MiB`), up to
	// 25 MiB. Default: 5242880.
	MaxSize int `json:"max_size,omitempty"`

	// MaxFiles caps the files one answer carries, up to 20; a question
	// takes three times as many uploads, so a file or two can be replaced.
	// Default: 5.
	MaxFiles int `json:"max_files,omitempty"`

	// Types are the media types a file may have, proven by its bytes: any
	// of the types content sniffing can tell.
	// Default: image/png image/jpeg image/webp image/gif application/pdf text/plain
	Types []string `json:"types,omitempty"`

	// MaxBytesPerSubject caps the bytes of the uploads stored at once for
	// all questions of one token subject (the asker), across instances, so
	// that no agent's questions can fill the store; -1 (`off`) is no cap.
	// Default: 104857600.
	MaxBytesPerSubject int `json:"max_bytes_per_subject,omitempty"`
}

// LoginConfig is the `login` block: `login caddy [header <Name>]` or
// `login oidc <issuer> { … }`.
type LoginConfig struct {
	// Mode is `caddy` or `oidc`.
	Mode string `json:"mode"`

	// Header (caddy mode) names the header that forward_auth copies the
	// user into from its authenticator's answer (`copy_headers
	// Remote-User`, not renamed). It is believed only on a request whose
	// authenticator answered 2xx with that same value: a copy the client
	// sent counts for nothing. Without it the person is
	// `{http.auth.user.id}`, which basic_auth (or any Caddy
	// authentication provider) sets.
	Header string `json:"header,omitempty"`

	// Issuer (oidc mode) is the OpenID provider's issuer URL, exactly as
	// in its tokens' `iss`; https (http only on loopback with
	// insecure_loopback_for_tests).
	Issuer string `json:"issuer,omitempty"`

	// ClientID (oidc mode) is this site's client id at the provider.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret (oidc mode) is its secret, as a placeholder such as
	// `{env.OIDC_CLIENT_SECRET}` (resolved at load time, never written into
	// adapted JSON). Empty for a public client (PKCE only).
	ClientSecret string `json:"client_secret,omitempty"`

	// Scopes (oidc mode) to ask for; `openid` is always added. Default:
	// openid, email and profile.
	Scopes []string `json:"scopes,omitempty"`

	// Claim (oidc mode) is the ID-token claim that names the person:
	// `sub` (stable, what OpenID recommends), `email` (only when the
	// provider says `email_verified`) or `preferred_username`. That id is
	// the `sub` whose questions the person sees. Default: sub.
	Claim string `json:"claim,omitempty"`

	// Allow (oidc mode, required) lists who may sign in: exact ids, and
	// `@example.com` for every verified email address of a domain (with
	// claim email); `*` lets in everyone the provider signs in.
	Allow []string `json:"allow,omitempty"`

	// SessionTTL (oidc mode) is how long a sign-in lasts. Default: 12h.
	SessionTTL caddy.Duration `json:"session_ttl,omitempty"`

	// InsecureLoopbackForTests (oidc mode) lets the issuer be plain
	// http:// on 127.0.0.1, ::1 or localhost. For tests only; a warning is
	// logged when it is on.
	InsecureLoopbackForTests bool `json:"insecure_loopback_for_tests,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_feedback",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision resolves the configuration (once, in resolve), opens (or
// joins) the shared store and builds the route table.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	cfg, err := h.resolve()
	if err != nil {
		return err
	}
	if cfg.publicURL == "" {
		h.logger.Warn("public_url is not set: answer links follow each request's scheme, Host and path prefix; set it when this site answers to more than one host name")
	}
	if cfg.jwksInsecure {
		h.logger.Warn("jwt_jwks_insecure_loopback_for_tests is on: identity-provider keys may be fetched over plain http from loopback; never use this in production")
	}
	verifier, err := auth.NewVerifierFrom(ctx, auth.Options{
		VerifierOptions: auth.VerifierOptions{Issuer: cfg.issuer, Audience: cfg.audience, MaxTTL: cfg.maxTTL, DeniedJTIs: h.JWTDeniedJTIs},
		Secret:          jwtSecret(cfg), PreviousSecrets: cfg.previousSecrets,
		JWKS: auth.JWKSOptions{URL: cfg.jwksURL, OIDCIssuer: cfg.oidcIssuer, InsecureLoopbackForTests: cfg.jwksInsecure,
			Logger: h.logger.Named("jwks")},
	})
	if err != nil {
		return fmt.Errorf("jwt: %w", err)
	}
	h.verifier = verifier

	if h.StoreRaw == nil {
		h.StoreRaw = json.RawMessage(`{"backend":"memory"}`)
	}
	mod, err := ctx.LoadModule(h, "StoreRaw")
	if err != nil {
		return fmt.Errorf("loading store: %w", err)
	}
	backend, ok := mod.(StoreBackend)
	if !ok {
		return fmt.Errorf("store module %T is not a StoreBackend", mod)
	}
	sh, err := acquireShared(backend, h.logger)
	if err != nil {
		return err
	}
	h.shared = sh
	sh.life.logger.Store(h.logger)
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}

	// The login first: the authorization server built on it checks the
	// tokens the transports accept.
	if h.login, err = h.newLogin(cfg, sh); err != nil {
		return err
	}
	if h.oauth, err = h.newOAuth(cfg, sh); err != nil {
		return err
	}
	core := feedback.NewService(sh.hub, feedback.Config{Limits: cfg.limits, Retention: cfg.retention, Quota: cfg.quota,
		IndexByOwner: h.Inbox, Attach: cfg.attach})
	// Push and ntfy before the routes: the inbox hands out push's key.
	if h.reach, err = h.newReacher(ctx, cfg, core, sh.hub.Records()); err != nil {
		return err
	}
	hcfg := handlers.Config{
		Core:         core,
		Verifier:     verifier,
		Observer:     sh.life,
		BaseURL:      baseURL(cfg.publicURL),
		Issuer:       cfg.issuer,
		Logger:       h.logger,
		WithholdLink: !cfg.linkToAgent,
	}
	if h.oauth != nil {
		hcfg.Tokens, hcfg.AuthServers = h.oauth, []string{h.oauth.Issuer()}
	}
	h.svc = handlers.New(hcfg)
	human, err := handlers.NewHuman(h.svc, handlers.HumanConfig{
		AllowedOrigins:       cfg.origins,
		MaxSocketsPerSession: cfg.wsPerSess,
		MaxSocketsPerSubject: cfg.wsPerSubj,
	})
	if err != nil {
		return err
	}
	h.human = human
	if h.inbox, err = h.newInbox(human); err != nil {
		return err
	}
	// WebSockets are hijacked, so Caddy's shutdown does not see them: this
	// configuration closes its own, 1012 on a reload and 1001 on exit.
	h.stopHooks = append(h.stopHooks, human.Stop)
	sessionKey, err := h.sessionKey(ctx, cfg, sh)
	if err != nil {
		return err
	}
	// requestState of stateless clients is signed like session ids: with
	// the shared secret, or (login alone) the key kept in the store, so a
	// retry may reach any instance; JWKS-only sites sign per process.
	stateKey := deriveKey(cfg.secret, "MCP request state")
	if stateKey == nil && sessionKey != nil {
		stateKey = deriveKey(string(sessionKey), "MCP request state")
	}
	h.mux = h.routes(handlers.MCPConfig{Elicitation: cfg.elicitation, Prefix: strippedPrefix,
		AllowedOrigins: cfg.origins, MaxSessionsPerSubject: cfg.mcpPerSubj, MaxCallsPerSubject: cfg.mcpCallsPerSubj,
		SessionKey: sessionKey, StateKey: stateKey})
	// On a reload the MCP streams stay: the next configuration serves them.
	// On exit they must end, or Caddy waits for them.
	h.stopHooks = append(h.stopHooks, sh.stopMCP)

	hooks, err := h.webhooks()
	if err != nil {
		return err
	}
	if len(hooks) > 0 {
		h.notifier = notify.New(hooks, notify.Options{Delivery: notify.Delivery{Logger: h.logger.Named("notify"), Observe: countDelivery}})
	}
	// The newest configuration's webhooks get the events of the shared store.
	sh.life.notifier.Store(h.notifier)
	sh.life.reach.Store(h.reach)
	return h.subscribeStopping(ctx)
}

// subscribeStopping runs stopHooks on Caddy's "stopping" event, which fires
// for the old configuration on a reload and for the last one on exit.
func (h *Handler) subscribeStopping(ctx caddy.Context) error {
	app, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %w", err)
	}
	return app.(*caddyevents.App).On("stopping", h)
}

// Handle implements caddyevents.Handler for the "stopping" event.
func (h *Handler) Handle(context.Context, caddy.Event) error {
	exiting := caddy.Exiting()
	for _, f := range h.stopHooks {
		f(exiting)
	}
	return nil
}

// routes is the route table: every endpoint the module serves.
func (h *Handler) routes(mcpCfg handlers.MCPConfig) *http.ServeMux {
	s := h.svc
	mux := http.NewServeMux()
	mux.Handle("/health", handlers.Methods(s.Health, http.MethodGet, http.MethodHead))
	mux.Handle("/.well-known/oauth-protected-resource", handlers.Methods(s.ResourceMetadata, http.MethodGet))
	mux.Handle("/.well-known/oauth-protected-resource/{rest...}", handlers.Methods(s.ResourceMetadata, http.MethodGet))

	mux.Handle("/api/feedback/create", handlers.Methods(s.Create, http.MethodPost))
	mux.Handle("/api/feedback/{id}/status", handlers.Methods(s.Status, http.MethodGet))
	// Cross-site browser posts are refused here as on the page's submit.
	mux.Handle("/api/feedback/{id}/submit", h.human.Protect(handlers.Methods(s.Submit, http.MethodPost)))
	mux.Handle("/api/feedback/{id}/result", handlers.Methods(s.Result, http.MethodGet))
	mux.Handle("/api/feedback/{id}/attachments/{aid}", handlers.Methods(s.Attachment, http.MethodGet, http.MethodHead))
	mux.Handle("/api/feedback/{id}/cancel", handlers.Methods(s.Cancel, http.MethodPost))
	mux.HandleFunc("/api/feedback/", handlers.UnknownEndpoint)

	// MCP: Streamable HTTP at /mcp, legacy SSE at /sse + /message.
	// They authenticate like the API (handlers/mcp.go).
	mcpEP := h.shared.mcp.Endpoints(s, mcpCfg)
	mux.Handle("/mcp", mcpEP.Streamable)
	mux.Handle("/sse", mcpEP.SSE)
	mux.Handle("/message", mcpEP.Message)

	// The person's side: the answer page /feedback/{id} and /ws/{id}.
	// The page is a shell; its script reads the token from the link's
	// fragment and posts it to /feedback/{id}/view and …/submit in the body,
	// which access logs never record (handlers/page.go).
	hp := h.human
	mux.Handle("/feedback/{id}", hp.Protect(handlers.Methods(hp.Page, http.MethodGet, http.MethodHead)))
	mux.Handle("/feedback/{id}/view", hp.Protect(handlers.Methods(hp.View, http.MethodPost)))
	mux.Handle("/feedback/{id}/submit", hp.Protect(handlers.Methods(hp.Submit, http.MethodPost)))
	mux.Handle("/feedback/{id}/attachments", hp.Protect(handlers.Methods(hp.Upload, http.MethodPost)))
	mux.Handle("/feedback/{id}/attachments/{aid}", hp.Protect(handlers.Methods(hp.Unattach, http.MethodDelete)))
	mux.Handle("/feedback/{id}/image/{n}", hp.Protect(handlers.Methods(hp.Image, http.MethodPost)))
	// One-tap answers from a notification's button, with its answer token
	// in the body (handlers/quick.go).
	mux.Handle("/feedback/{id}/quick", hp.Protect(handlers.Methods(hp.Quick, http.MethodPost)))
	mux.Handle(handlers.StaticPrefix+"{name}", handlers.Methods(hp.Static, http.MethodGet, http.MethodHead))
	mux.Handle("/ws/{id}", handlers.Methods(hp.WS, http.MethodGet))

	// Sign-in (`login`): /login, /login/callback, /logout, /login/whoami.
	if h.login != nil {
		for pattern, handler := range h.login.Routes() {
			mux.Handle(pattern, handler)
		}
	}
	// The inbox (`inbox`, with `login`): /inbox, its list, answers,
	// socket, push subscriptions, service worker and manifest
	// (handlers/inbox.go).
	if h.inbox != nil {
		for pattern, handler := range h.inbox.Routes() {
			mux.Handle(pattern, handler)
		}
	}
	// The OAuth authorization server (with `login`): RFC 8414 metadata at
	// /.well-known/oauth-authorization-server[/…], /oauth/authorize (and
	// the consent page's POST), /oauth/token, /oauth/revoke,
	// /oauth/register, /oauth/consents (oauth/server.go).
	if h.oauth != nil {
		for pattern, handler := range h.oauth.Routes() {
			mux.Handle(pattern, handler)
		}
	}
	return mux
}

// ServeHTTP serves the module's routes and passes anything else on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		return next.ServeHTTP(w, r)
	}
	h.mux.ServeHTTP(w, r)
	return nil
}

// Cleanup lets go of the shared store. It runs on every config unload,
// reloads included, while streams of this instance may still be open; the
// store (and the MCP sessions on it) close only when the last
// configuration using it is gone.
func (h *Handler) Cleanup() error {
	h.verifier.Close() // stops JWKS refreshes; nil-safe
	if h.login != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := h.login.Close(ctx)
		cancel()
		if err != nil {
			h.logger.Warn("closing login", zap.Error(err))
		}
	}
	if h.human != nil {
		// Normally done already by the "stopping" hook; this covers a
		// configuration unloaded without that event. Idempotent.
		h.human.Stop(caddy.Exiting())
	}
	if h.notifier != nil {
		if h.shared != nil {
			h.shared.life.notifier.CompareAndSwap(h.notifier, nil)
		}
		h.notifier.Close()
	}
	if h.reach != nil {
		if h.shared != nil {
			h.shared.life.reach.CompareAndSwap(h.reach, nil)
		}
		h.reach.close()
	}
	if h.shared == nil {
		return nil
	}
	key := h.shared.key
	h.shared = nil
	return releaseShared(key)
}

// baseURL returns the link base for a request: the configured public URL,
// or scheme://host plus whatever path prefix a `handle_path` stripped.
func baseURL(publicURL string) func(r *http.Request) string {
	if publicURL != "" {
		return func(*http.Request) string { return publicURL }
	}
	return func(r *http.Request) string {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		return scheme + "://" + r.Host + strippedPrefix(r)
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyevents.Handler         = (*Handler)(nil)
)
