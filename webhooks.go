package mcpfeedback

import (
	"fmt"
	"net/url"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
)

// WebhookConfig is one receiver of session events (`notify webhook`).
type WebhookConfig struct {
	// URL receives a POST per event. Placeholders such as {env.HOOK_URL}
	// are resolved at load time. The session.created event carries the
	// answer link, capability token included, so use https.
	URL string `json:"url"`
	// Headers are added to every request (e.g. an Authorization for the
	// receiver); values may be placeholders.
	Headers map[string]string `json:"headers,omitempty"`
	// Secret, when set, signs each body: header
	// `X-Feedback-Signature: sha256=<hex HMAC-SHA256 of the body>`.
	Secret string `json:"secret,omitempty"`
	// Format of the body: `json` (default, the event), `slack`
	// ({"text": …}, also Mattermost and Discord's /slack URLs) or `ntfy`
	// (plain text with Title and Click headers).
	Format string `json:"format,omitempty"`
	// Events to send: session.created, session.answered, session.expired,
	// session.cancelled. Empty means all four.
	Events []string `json:"events,omitempty"`
	// IncludeAnswer adds the answer itself (selected options and free
	// text) to session.answered; without it the event says only when, how
	// (`via`) and by whom the question was answered.
	IncludeAnswer bool `json:"include_answer,omitempty"`
}

var eventNames = map[string]string{
	"created": notify.EventCreated, "answered": notify.EventAnswered, "expired": notify.EventExpired, "cancelled": notify.EventCancelled,
	notify.EventCreated: notify.EventCreated, notify.EventAnswered: notify.EventAnswered,
	notify.EventExpired: notify.EventExpired, notify.EventCancelled: notify.EventCancelled,
}

// webhooks resolves placeholders and checks each receiver.
func (h *Handler) webhooks() ([]notify.Webhook, error) {
	repl := caddy.NewReplacer()
	var out []notify.Webhook
	for i, c := range h.Notify {
		w := notify.Webhook{URL: repl.ReplaceKnown(c.URL, ""), Secret: repl.ReplaceKnown(c.Secret, ""), Format: c.Format,
			Headers: map[string]string{}, IncludeAnswer: c.IncludeAnswer}
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("notify webhook #%d: %q is not an http(s) URL", i+1, redact(w.URL))
		}
		if !slices.Contains([]string{"", notify.FormatJSON, notify.FormatSlack, notify.FormatNtfy}, c.Format) {
			return nil, fmt.Errorf("notify webhook #%d: format must be json, slack or ntfy, not %q", i+1, c.Format)
		}
		for k, v := range c.Headers {
			w.Headers[k] = repl.ReplaceKnown(v, "")
		}
		for _, e := range c.Events {
			name, ok := eventNames[e]
			if !ok {
				return nil, fmt.Errorf("notify webhook #%d: unknown event %q (created, answered, expired, cancelled)", i+1, e)
			}
			w.Events = append(w.Events, name)
		}
		out = append(out, w)
	}
	return out, nil
}

// unmarshalNotify parses
//
//	notify webhook <url> {
//		header <name> <value>
//		secret <secret>
//		format json|slack|ntfy
//		events created answered expired cancelled
//		include_answer
//	}
//
// or `notify ntfy <topic-url> { token <t> }` (unmarshalNtfy).
func (h *Handler) unmarshalNotify(d *caddyfile.Dispenser) error {
	if d.NextArg() && d.Val() == "ntfy" {
		return h.unmarshalNtfy(d)
	}
	if d.Val() != "webhook" {
		return d.Errf("notify takes `notify webhook <url> { … }` or `notify ntfy <topic-url> { token … }`")
	}
	var c WebhookConfig
	if !d.NextArg() {
		return d.Errf("notify webhook needs a URL")
	}
	c.URL = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("header takes a name and a value")
			}
			if c.Headers == nil {
				c.Headers = map[string]string{}
			}
			c.Headers[args[0]] = args[1]
		case "secret":
			if err := oneString(d, &c.Secret); err != nil {
				return err
			}
		case "format":
			if err := oneString(d, &c.Format); err != nil {
				return err
			}
		case "events":
			c.Events = d.RemainingArgs()
			if len(c.Events) == 0 {
				return d.Errf("events needs at least one of created, answered, expired, cancelled")
			}
		case "include_answer":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.IncludeAnswer = true
		default:
			return d.Errf("unknown notify webhook option %q (known: header, secret, format, events, include_answer)", d.Val())
		}
	}
	h.Notify = append(h.Notify, c)
	return nil
}
