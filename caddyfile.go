package mcpfeedback

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mcp_feedback", parseCaddyfile)
	// After encode, so responses can be compressed, and before handle and
	// respond, so a plain site block needs no `order` line and a catch-all
	// `handle` does not hide the module's routes.
	httpcaddyfile.RegisterDirectiveOrder("mcp_feedback", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	mcp_feedback {
//		jwt_secret         {env.JWT_SECRET}
//		jwt_issuer         <iss>
//		jwt_audience       <aud>
//		jwt_previous_secrets {env.OLD_JWT_SECRET} [...]
//		jwt_jwks           <https url of a JWKS>
//		jwt_oidc_issuer    <https issuer url>   (OIDC discovery; instead of jwt_jwks)
//		jwt_jwks_insecure_loopback_for_tests    (tests only: http on loopback)
//		public_url         <https://host[/prefix]>
//		store              memory | redis <url> { key_prefix <prefix> }
//		default_timeout    <duration>
//		min_timeout        <duration>
//		max_timeout        <duration>
//		max_message_length <n>
//		max_options        <n>
//		max_option_length  <n>
//		retention          <duration>
//		max_pending_per_subject <n> | off
//		creates_per_minute <n> | off
//		notify webhook <url> { header <k> <v>; secret <s>; format json|slack|ntfy; events … }  (repeatable)
//		notify ntfy <topic-url> { token <t> }  (repeatable; one-tap answer buttons)
//		inbox              (with login: /inbox)
//		allow_addressing   (with inbox: create takes "to")
//		push { vapid_private_key <k>; vapid_public_key <k>; subject mailto:<addr>; insecure_loopback_for_tests }
//		allowed_origins    <origin> [<origin>...]
//		ws_max_per_session <n>
//		ws_max_per_subject <n>
//		elicitation        off | url | form
//		mcp_max_sessions_per_subject <n>
//		login              caddy [header <Name>] | oidc <issuer> { … }  (see unmarshalLogin)
//		oauth_registrations_per_hour <n> | off
//		oauth_cimd_insecure_loopback_for_tests
//	}
//
// Every subdirective may appear once; an unknown one is an error, so that a
// typo never silently falls back to a default.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("mcp_feedback takes no arguments on its line; put options in a block")
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] && name != "notify" {
			return d.Errf("%s is set twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "jwt_secret":
			err = oneString(d, &h.JWTSecret)
		case "jwt_issuer":
			err = oneString(d, &h.JWTIssuer)
		case "jwt_audience":
			err = oneString(d, &h.JWTAudience)
		case "jwt_max_ttl":
			err = oneDuration(d, &h.JWTMaxTTL)
		case "jwt_denied_jtis":
			err = manyStrings(d, &h.JWTDeniedJTIs)
		case "jwt_previous_secrets":
			err = manyStrings(d, &h.JWTPreviousSecrets)
		case "jwt_jwks":
			err = oneString(d, &h.JWTJWKS)
		case "jwt_oidc_issuer":
			err = oneString(d, &h.JWTOIDCIssuer)
		case "jwt_jwks_insecure_loopback_for_tests":
			if d.NextArg() {
				return d.Errf("%s takes no value", name)
			}
			h.JWTJWKSInsecureLoopbackForTests = true
		case "public_url":
			err = oneString(d, &h.PublicURL)
		case "store":
			err = h.unmarshalStore(d)
		case "notify":
			err = h.unmarshalNotify(d)
		case "push":
			err = h.unmarshalPush(d)
		case "inbox":
			if d.NextArg() {
				return d.Errf("inbox takes no value")
			}
			h.Inbox = true
		case "allow_addressing":
			if d.NextArg() {
				return d.Errf("allow_addressing takes no value")
			}
			h.AllowAddressing = true
		case "default_timeout":
			err = oneDuration(d, &h.DefaultTimeout)
		case "min_timeout":
			err = oneDuration(d, &h.MinTimeout)
		case "max_timeout":
			err = oneDuration(d, &h.MaxTimeout)
		case "retention":
			err = oneDuration(d, &h.Retention)
		case "max_message_length":
			err = oneInt(d, &h.MaxMessageLength)
		case "max_options":
			err = oneInt(d, &h.MaxOptions)
		case "max_option_length":
			err = oneInt(d, &h.MaxOptionLength)
		case "max_questions":
			err = oneInt(d, &h.MaxQuestions)
		case "max_images":
			err = oneLimit(d, &h.MaxImages)
		case "timeout_out_of_range":
			if err = oneString(d, &h.TimeoutOutOfRange); err == nil && h.TimeoutOutOfRange != "clamp" && h.TimeoutOutOfRange != "reject" {
				return d.Errf("timeout_out_of_range must be clamp or reject, not %q", h.TimeoutOutOfRange)
			}
		case "max_pending_per_subject":
			err = oneLimit(d, &h.MaxPendingPerSubject)
		case "creates_per_minute":
			err = oneLimit(d, &h.CreatesPerMinute)
		case "allowed_origins":
			if err = manyStrings(d, &h.AllowedOrigins); err == nil {
				for _, o := range h.AllowedOrigins {
					if _, oerr := handlers.CanonicalOrigin(o); oerr != nil {
						return d.Err(oerr.Error())
					}
				}
			}
		case "ws_max_per_session":
			err = oneInt(d, &h.WSMaxPerSession)
		case "ws_max_per_subject":
			err = oneInt(d, &h.WSMaxPerSubject)
		case "mcp_max_sessions_per_subject":
			err = oneInt(d, &h.MCPMaxSessionsPerSubject)
		case "mcp_max_calls_per_subject":
			err = oneInt(d, &h.MCPMaxCallsPerSubject)
		case "link_to_agent":
			var on bool
			if on, err = oneSwitch(d); err == nil {
				h.LinkToAgent = &on
			}
		case "login":
			err = h.unmarshalLogin(d)
		case "attachments":
			err = h.unmarshalAttachments(d)
		case "oauth_registrations_per_hour":
			err = oneLimit(d, &h.OAuthRegistrationsPerHour)
		case "oauth_cimd_insecure_loopback_for_tests":
			if d.NextArg() {
				return d.Errf("%s takes no value", name)
			}
			h.OAuthCIMDInsecureLoopbackForTests = true
		case "elicitation":
			if err = oneString(d, &h.Elicitation); err == nil && h.Elicitation != "off" && h.Elicitation != "url" && h.Elicitation != "form" {
				return d.Errf("elicitation must be off, url or form, not %q", h.Elicitation)
			}
		default:
			return d.Errf("unknown mcp_feedback option %q (known: jwt_secret, jwt_issuer, jwt_audience, jwt_max_ttl, jwt_denied_jtis, jwt_previous_secrets, jwt_jwks, jwt_oidc_issuer, jwt_jwks_insecure_loopback_for_tests, public_url, store, "+
				"default_timeout, min_timeout, max_timeout, max_message_length, max_options, max_option_length, retention, max_pending_per_subject, creates_per_minute, notify, push, inbox, allow_addressing, allowed_origins, ws_max_per_session, ws_max_per_subject, elicitation, mcp_max_sessions_per_subject, mcp_max_calls_per_subject, link_to_agent, login, attachments, oauth_registrations_per_hour, oauth_cimd_insecure_loopback_for_tests)", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalStore(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("store needs a backend: memory or redis <url>")
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, "http.handlers.mcp_feedback.stores."+name)
	if err != nil {
		return err
	}
	h.StoreRaw = caddyconfig.JSONModuleObject(unm, "backend", name, nil)
	return nil
}

func oneString(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s needs a value", name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one value", name)
	}
	return nil
}

// manyStrings reads one or more values on the option's line.
func manyStrings(d *caddyfile.Dispenser, dst *[]string) error {
	name := d.Val()
	*dst = append(*dst, d.RemainingArgs()...)
	if len(*dst) == 0 {
		return d.Errf("%s needs at least one value", name)
	}
	return nil
}

func oneDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := oneString(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil || v <= 0 || v%time.Second != 0 {
		return d.Errf("%s: %q is not a positive whole number of seconds (e.g. 90s, 5m, 1h)", d.Val(), s)
	}
	*dst = caddy.Duration(v)
	return nil
}

func oneInt(d *caddyfile.Dispenser, dst *int) error {
	var s string
	if err := oneString(d, &s); err != nil {
		return err
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 || v > 1_000_000 {
		return d.Errf("%q is not a positive whole number", s)
	}
	*dst = v
	return nil
}

// oneLimit reads a positive limit, or `off` (stored as -1).
func oneLimit(d *caddyfile.Dispenser, dst *int) error {
	if d.CountRemainingArgs() == 1 && d.NextArg() {
		if d.Val() == "off" {
			*dst = -1
			return nil
		}
		d.Prev()
	}
	return oneInt(d, dst)
}

// unmarshalAttachments reads `attachments off` or
// `attachments { max_size <size>; max_files <n>; types <type>…; max_bytes_per_subject <size>|off }`.
// Sizes take units (5MiB, 100MB), as Caddy's own request_body does.
func (h *Handler) unmarshalAttachments(d *caddyfile.Dispenser) error {
	if h.Attachments != nil {
		return d.Err("attachments is given twice")
	}
	a := &AttachmentsConfig{}
	h.Attachments = a
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		a.Off = true
		if d.NextBlock(d.Nesting()) {
			return d.Err("attachments off takes no block")
		}
		return nil
	case len(args) > 0:
		return d.Errf("attachments takes `off` or a block, not %q", strings.Join(args, " "))
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("attachments: %s is given twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "max_size":
			err = oneSize(d, &a.MaxSize, false)
		case "max_files":
			err = oneInt(d, &a.MaxFiles)
		case "types":
			err = manyStrings(d, &a.Types)
		case "max_bytes_per_subject":
			err = oneSize(d, &a.MaxBytesPerSubject, true)
		default:
			return d.Errf("unknown attachments option %q (known: max_size, max_files, types, max_bytes_per_subject)", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// oneSize reads a byte size such as 5MiB or 100MB (or `off`, stored as -1,
// when offOK).
func oneSize(d *caddyfile.Dispenser, dst *int, offOK bool) error {
	var s string
	if err := oneString(d, &s); err != nil {
		return err
	}
	if offOK && s == "off" {
		*dst = -1
		return nil
	}
	v, err := humanize.ParseBytes(s)
	if err != nil || v == 0 || v > 1<<40 {
		return d.Errf("%q is not a size such as 5MiB or 100MB", s)
	}
	*dst = int(v)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)

// oneSwitch reads `on` or `off`.
func oneSwitch(d *caddyfile.Dispenser) (bool, error) {
	name := d.Val()
	var v string
	if err := oneString(d, &v); err != nil {
		return false, err
	}
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("%s takes on or off, not %q", name, v)
}
