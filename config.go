package mcpfeedback

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/oauth"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Defaults is the one table of defaults: every field of Handler that is
// left unset takes its value from here, when the configuration is
// resolved (resolve). The field docs and the README's configuration table
// quote these values; TestDefaultsDocumented keeps them in step.
func Defaults() Handler {
	yes := true
	// Each number is written once, beside the code that needs a value
	// when none is configured (unit tests build those packages alone);
	// this table gathers them, and is what the README quotes.
	lim := validate.DefaultLimits()
	return Handler{
		JWTMaxTTL:                caddy.Duration(auth.DefaultMaxTTL),
		DefaultTimeout:           caddy.Duration(lim.DefaultTimeout),
		MinTimeout:               caddy.Duration(lim.MinTimeout),
		MaxTimeout:               caddy.Duration(lim.MaxTimeout),
		MaxMessageLength:         lim.MaxMessageLength,
		MaxOptions:               lim.MaxOptions,
		MaxOptionLength:          lim.MaxOptionLength,
		MaxQuestions:             lim.MaxQuestions,
		MaxImages:                lim.MaxImages,
		TimeoutOutOfRange:        lim.TimeoutOutOfRange,
		Retention:                caddy.Duration(time.Hour),
		MaxPendingPerSubject:     100,
		CreatesPerMinute:         60,
		WSMaxPerSession:          handlers.DefaultMaxSocketsPerSession,
		WSMaxPerSubject:          handlers.DefaultMaxSocketsPerSubject,
		Elicitation:              handlers.ElicitationURL,
		MCPMaxSessionsPerSubject: handlers.DefaultMaxMCPSessionsPerSubject,
		MCPMaxCallsPerSubject:    handlers.DefaultMaxMCPCallsPerSubject,
		LinkToAgent:              &yes,
		// Off: an agent's questions reach only its own person unless the
		// site lets it address others.
		AllowAddressing:           false,
		OAuthRegistrationsPerHour: oauth.DefaultRegistrationsPerHour,
		// The defaults inside a `login` block; login itself is off unless
		// configured.
		Login: &LoginConfig{Claim: "sub", SessionTTL: caddy.Duration(12 * time.Hour)},
		Attachments: &AttachmentsConfig{
			MaxSize:            5 << 20,
			MaxFiles:           5,
			Types:              slices.Clone(validate.AttachmentTypes),
			MaxBytesPerSubject: 100 << 20,
		},
	}
}

// settings is the configuration resolved once: placeholders replaced,
// defaults applied, derived values computed. Everything after Provision
// reads these, never the raw fields.
type settings struct {
	secret, issuer, audience string
	maxTTL                   time.Duration
	// previousSecrets verify only (jwt_previous_secrets).
	previousSecrets [][]byte
	// jwksURL or oidcIssuer turns on JWKS mode; jwksInsecure is the
	// loopback-http test switch.
	jwksURL, oidcIssuer string
	jwksInsecure        bool
	// publicURL is the base of answer links without a trailing slash; ""
	// means each request's own scheme, host and stripped prefix.
	publicURL string
	limits    validate.Limits
	retention time.Duration
	quota     store.Quota
	// origins are the canonical origins besides the site's own that may
	// open WebSockets, post answers and call MCP from a browser (the
	// public URL's origin first, when set).
	origins     []string
	elicitation string
	wsPerSess   int
	wsPerSubj   int
	mcpPerSubj  int
	// mcpCallsPerSubj caps tool calls in flight per subject.
	mcpCallsPerSubj int
	// linkToAgent: the answer link goes to the agent (create, tools).
	linkToAgent bool
	// login is the resolved `login` block; nil when sign-in is off.
	login *loginSettings
	// attach is the resolved `attachments` block (MaxFiles 0 when off).
	attach feedback.AttachRules
}

// resolve fills unset fields from Defaults and checks and derives every
// setting. It is the only place configuration becomes runtime values.
func (h *Handler) resolve() (*settings, error) {
	d := Defaults()
	setDur := func(f *caddy.Duration, def caddy.Duration) {
		if *f <= 0 {
			*f = def
		}
	}
	setInt := func(f *int, def int) {
		if *f == 0 {
			*f = def
		}
	}
	setDur(&h.DefaultTimeout, d.DefaultTimeout)
	setDur(&h.MinTimeout, d.MinTimeout)
	setDur(&h.MaxTimeout, d.MaxTimeout)
	setDur(&h.Retention, d.Retention)
	setDur(&h.JWTMaxTTL, d.JWTMaxTTL)
	setInt(&h.MaxMessageLength, d.MaxMessageLength)
	setInt(&h.MaxOptions, d.MaxOptions)
	setInt(&h.MaxOptionLength, d.MaxOptionLength)
	setInt(&h.MaxQuestions, d.MaxQuestions)
	setInt(&h.MaxImages, d.MaxImages)
	if h.TimeoutOutOfRange == "" {
		h.TimeoutOutOfRange = d.TimeoutOutOfRange
	}
	setInt(&h.MaxPendingPerSubject, d.MaxPendingPerSubject)
	setInt(&h.CreatesPerMinute, d.CreatesPerMinute)
	setInt(&h.WSMaxPerSession, d.WSMaxPerSession)
	setInt(&h.WSMaxPerSubject, d.WSMaxPerSubject)
	setInt(&h.MCPMaxSessionsPerSubject, d.MCPMaxSessionsPerSubject)
	setInt(&h.MCPMaxCallsPerSubject, d.MCPMaxCallsPerSubject)
	setInt(&h.OAuthRegistrationsPerHour, d.OAuthRegistrationsPerHour)
	if h.LinkToAgent == nil {
		h.LinkToAgent = d.LinkToAgent
	}
	if h.Elicitation == "" {
		h.Elicitation = d.Elicitation
		if !*h.LinkToAgent {
			// The agent's client must not be able to answer for the person,
			// nor be handed the link to show.
			h.Elicitation = handlers.ElicitationOff
		}
	}

	repl := caddy.NewReplacer()
	s := &settings{
		secret:   repl.ReplaceKnown(h.JWTSecret, ""),
		issuer:   repl.ReplaceKnown(h.JWTIssuer, ""),
		audience: repl.ReplaceKnown(h.JWTAudience, ""),
		maxTTL:   time.Duration(h.JWTMaxTTL),
		limits: validate.Limits{
			DefaultTimeout:   time.Duration(h.DefaultTimeout),
			MinTimeout:       time.Duration(h.MinTimeout),
			MaxTimeout:       time.Duration(h.MaxTimeout),
			MaxMessageLength: h.MaxMessageLength,
			MaxOptions:       h.MaxOptions,
			MaxOptionLength:  h.MaxOptionLength,
			MaxQuestions:     h.MaxQuestions,
			MaxImages:        max(h.MaxImages, 0),
			// checked below
			TimeoutOutOfRange: h.TimeoutOutOfRange,
			AllowAddressing:   h.AllowAddressing,
		},
		retention: time.Duration(h.Retention),
		// A runaway agent must not be able to fill the store or a person's
		// screen, so quotas are on unless turned off with -1.
		quota:           store.Quota{MaxPending: max(h.MaxPendingPerSubject, 0), CreatesPerMinute: max(h.CreatesPerMinute, 0)},
		elicitation:     h.Elicitation,
		wsPerSess:       h.WSMaxPerSession,
		wsPerSubj:       h.WSMaxPerSubject,
		mcpPerSubj:      h.MCPMaxSessionsPerSubject,
		mcpCallsPerSubj: h.MCPMaxCallsPerSubject,
		linkToAgent:     *h.LinkToAgent,
	}
	attach, err := h.resolveAttachments(d)
	if err != nil {
		return nil, err
	}
	s.attach = attach
	if err := h.resolveAuth(repl, s); err != nil {
		return nil, err
	}
	if err := checkLimits(s.limits); err != nil {
		return nil, err
	}
	if h.AllowAddressing && !h.Inbox {
		return nil, errors.New("allow_addressing needs inbox (with login): addressed people find and answer their questions in their inbox")
	}
	if h.MaxImages > validate.MaxImages {
		return nil, fmt.Errorf("max_images is at most %d, not %d", validate.MaxImages, h.MaxImages)
	}
	if s.limits.TimeoutOutOfRange != validate.TimeoutClamp && s.limits.TimeoutOutOfRange != validate.TimeoutReject {
		return nil, fmt.Errorf("timeout_out_of_range must be clamp or reject, not %q", s.limits.TimeoutOutOfRange)
	}
	if h.MaxMessageLength < 0 || h.MaxOptions < 0 || h.MaxOptionLength < 0 || h.MaxQuestions < 0 || h.WSMaxPerSession < 0 || h.WSMaxPerSubject < 0 ||
		h.MCPMaxSessionsPerSubject < 0 || h.MCPMaxCallsPerSubject < 0 {
		return nil, errors.New("length, option and connection limits must be positive")
	}
	switch s.elicitation {
	case handlers.ElicitationOff, handlers.ElicitationURL, handlers.ElicitationForm:
	default:
		return nil, fmt.Errorf("elicitation must be off, url or form, not %q", s.elicitation)
	}
	if !s.linkToAgent && s.elicitation != handlers.ElicitationOff {
		return nil, errors.New("link_to_agent off keeps the answer from the agent's side, so elicitation (which goes through the agent's client) must be off too")
	}
	s.publicURL = strings.TrimRight(repl.ReplaceKnown(h.PublicURL, ""), "/")
	if s.publicURL != "" {
		u, err := url.Parse(s.publicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("public_url %q must be an absolute http(s) URL without query or fragment", s.publicURL)
		}
		s.origins = append(s.origins, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	if s.publicURL == "" && len(h.Notify) > 0 {
		// Webhooks carry answer links to people. Without public_url a link
		// follows the request's Host header (or an absolute-form target),
		// which a caller chooses; a handler cannot see whether its route
		// has a host matcher, so this fails closed.
		return nil, errors.New("notify sends answer links to people, so public_url is required with it (e.g. `public_url https://feedback.example.com`); without it a link would follow whatever Host a request names")
	}
	for _, o := range h.AllowedOrigins {
		canon, err := handlers.CanonicalOrigin(o)
		if err != nil {
			return nil, err
		}
		s.origins = append(s.origins, canon)
	}
	if err := h.resolveLogin(repl, s); err != nil {
		return nil, err
	}
	return s, nil
}

// resolveAuth checks and fills the token settings: a shared secret (and
// previous ones), an identity provider's JWKS, or both.
func (h *Handler) resolveAuth(repl *caddy.Replacer, s *settings) error {
	s.jwksURL = repl.ReplaceKnown(h.JWTJWKS, "")
	s.oidcIssuer = repl.ReplaceKnown(h.JWTOIDCIssuer, "")
	s.jwksInsecure = h.JWTJWKSInsecureLoopbackForTests
	jwks := s.jwksURL != "" || s.oidcIssuer != ""
	if s.secret == "" && !jwks && h.Login == nil {
		return errors.New("jwt_secret is required (e.g. `jwt_secret {env.JWT_SECRET}` with JWT_SECRET set), or an identity provider's keys (jwt_jwks or jwt_oidc_issuer), or login (agents then get tokens from its OAuth server); the module never runs without authentication")
	}
	if s.secret != "" && len(s.secret) < auth.MinSecretLength {
		return fmt.Errorf("jwt_secret must be at least %d bytes, got %d", auth.MinSecretLength, len(s.secret))
	}
	for i, raw := range h.JWTPreviousSecrets {
		p := repl.ReplaceKnown(raw, "")
		if len(p) < auth.MinSecretLength {
			return fmt.Errorf("jwt_previous_secrets: secret %d is %d bytes, at least %d are required (an unset environment variable gives 0)", i+1, len(p), auth.MinSecretLength)
		}
		s.previousSecrets = append(s.previousSecrets, []byte(p))
	}
	if len(s.previousSecrets) > 0 && s.secret == "" {
		return errors.New("jwt_previous_secrets needs jwt_secret: previous secrets only verify, the current one signs")
	}
	if !jwks {
		return nil
	}
	if s.jwksURL != "" && s.oidcIssuer != "" {
		return errors.New("set jwt_jwks or jwt_oidc_issuer, not both")
	}
	if s.issuer == "" {
		s.issuer = s.oidcIssuer
	}
	if s.issuer == "" {
		return errors.New("jwt_issuer is required with jwt_jwks: the iss the identity provider puts in its tokens")
	}
	if s.audience == "" {
		return errors.New("jwt_audience is required with jwt_jwks or jwt_oidc_issuer: an identity provider signs tokens for many services, and only those naming this one (aud) may be accepted")
	}
	return nil
}

// MaxMaxTimeout bounds max_timeout: a week covers a person who is away,
// and bounds how long a question (and its quota slot) can stay open.
const MaxMaxTimeout = 7 * 24 * time.Hour

func checkLimits(l validate.Limits) error {
	if l.MinTimeout < time.Second || l.MinTimeout%time.Second != 0 || l.MaxTimeout%time.Second != 0 || l.DefaultTimeout%time.Second != 0 {
		return errors.New("timeouts must be whole seconds, and min_timeout at least 1s")
	}
	if l.MaxTimeout > MaxMaxTimeout {
		return fmt.Errorf("max_timeout %s is longer than the longest allowed, %s (7 days)", l.MaxTimeout, MaxMaxTimeout)
	}
	if l.MinTimeout > l.DefaultTimeout || l.DefaultTimeout > l.MaxTimeout {
		return fmt.Errorf("need min_timeout (%s) <= default_timeout (%s) <= max_timeout (%s)", l.MinTimeout, l.DefaultTimeout, l.MaxTimeout)
	}
	return nil
}

// deriveKey derives a key for one purpose from the site's secret, so that
// every instance sharing the secret shares it, and no two purposes share a
// key.
func deriveKey(secret, purpose string) []byte {
	if secret == "" {
		// JWKS only (jwt_jwks, jwt_oidc_issuer): no shared secret, so no
		// shared key; an HMAC under an empty key would be public.
		return nil
	}
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("caddy-mcp-feedback: " + purpose))
	return h.Sum(nil)
}

// Ceilings of the `attachments` block.
const (
	maxAttachmentSize  = 25 << 20
	maxAttachmentFiles = validate.MaxAttachmentIDs
)

// resolveAttachments checks the `attachments` block against the defaults.
func (h *Handler) resolveAttachments(d Handler) (feedback.AttachRules, error) {
	a := AttachmentsConfig{}
	if h.Attachments != nil {
		a = *h.Attachments
	}
	if a.Off {
		return feedback.AttachRules{}, nil
	}
	def := d.Attachments
	if a.MaxSize == 0 {
		a.MaxSize = def.MaxSize
	}
	if a.MaxFiles == 0 {
		a.MaxFiles = def.MaxFiles
	}
	if a.Types == nil {
		a.Types = def.Types
	}
	if a.MaxBytesPerSubject == 0 {
		a.MaxBytesPerSubject = def.MaxBytesPerSubject
	}
	if a.MaxSize < 1 || a.MaxSize > maxAttachmentSize {
		return feedback.AttachRules{}, fmt.Errorf("attachments: max_size must be from 1 byte to 25MiB, not %d bytes", a.MaxSize)
	}
	if a.MaxFiles < 1 || a.MaxFiles > maxAttachmentFiles {
		return feedback.AttachRules{}, fmt.Errorf("attachments: max_files must be from 1 to %d, not %d", maxAttachmentFiles, a.MaxFiles)
	}
	if len(a.Types) == 0 {
		return feedback.AttachRules{}, errors.New("attachments: types needs at least one type (or use attachments off)")
	}
	for _, t := range a.Types {
		if !slices.Contains(validate.AttachmentTypes, t) {
			return feedback.AttachRules{}, fmt.Errorf("attachments: type %q cannot be proven by content sniffing; allowed: %s", t, strings.Join(validate.AttachmentTypes, " "))
		}
	}
	if a.MaxBytesPerSubject < -1 || a.MaxBytesPerSubject > 0 && a.MaxBytesPerSubject < a.MaxSize {
		return feedback.AttachRules{}, fmt.Errorf("attachments: max_bytes_per_subject must be at least max_size (%d bytes), or off", a.MaxSize)
	}
	return feedback.AttachRules{MaxSize: a.MaxSize, MaxFiles: a.MaxFiles, Types: slices.Clone(a.Types), MaxBytesPerSubject: int64(max(a.MaxBytesPerSubject, 0))}, nil
}
