package mcpfeedback

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	webpush "github.com/SherClockHolmes/webpush-go"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/handlers"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// PushConfig turns on Web Push (`push { … }`): the server itself sends
// notifications to the devices a person turned them on for, with no
// third-party app.
type PushConfig struct {
	// VAPIDPrivateKey and VAPIDPublicKey are the server's VAPID key pair
	// (RFC 8292), base64url as `web-push generate-vapid-keys` prints them;
	// write the private key as a placeholder (`{env.VAPID_PRIVATE_KEY}`).
	// When both are unset a pair is generated once and kept in the store,
	// so every instance sharing the store uses the same one.
	VAPIDPrivateKey string `json:"vapid_private_key,omitempty"`
	VAPIDPublicKey  string `json:"vapid_public_key,omitempty"`
	// Subject is the contact push services may use about this server:
	// `mailto:ops@example.com` or an https URL. Required.
	Subject string `json:"subject,omitempty"`
	// InsecureLoopbackForTests lets a device register an http:// push
	// endpoint on 127.0.0.1 (a local test push service). For tests only;
	// a warning is logged when it is on.
	InsecureLoopbackForTests bool `json:"insecure_loopback_for_tests,omitempty"`
}

// NtfyConfig is one ntfy topic (`notify ntfy <topic-url> { token … }`):
// each new question is published there with a button per option that
// answers it from the phone.
type NtfyConfig struct {
	// URL is the topic, e.g. `https://ntfy.sh/<topic>` or a self-hosted
	// server's.
	URL string `json:"url"`
	// Token is an ntfy access token (`{env.NTFY_TOKEN}`), sent as a
	// bearer token. Use a topic only you can read: the message carries
	// the answer link and a one-tap answer token.
	Token string `json:"token,omitempty"`
}

// reacher tells people about their questions by Web Push and ntfy. One
// per configuration; the shared lifecycle hands it every event.
type reacher struct {
	core   *feedback.Service
	base   string
	pusher *notify.Pusher
	ntfy   *notify.Ntfy
	logger *zap.Logger
}

// pushTopic is a question's Topic header: 32 URL-safe characters (RFC
// 8030 §5.4), so a close replaces an undelivered ask at the push service.
func pushTopic(id string) string { return strings.ReplaceAll(id, "-", "") }

func (r *reacher) event(e feedback.Event) {
	if r == nil {
		return
	}
	s := e.Session
	// Every person whose inbox shows the question (its owner and the
	// people it is addressed to) gets it on their devices, with buttons
	// that answer as that person.
	people := s.People()
	if e.Kind != feedback.EventCreated {
		// Close the notification on every device: answered elsewhere,
		// withdrawn or expired. Kept an hour for a device that is off.
		for _, p := range people {
			r.pusher.Send(notify.PushJob{Person: p, Event: "session.closed", SessionID: s.ID,
				Deadline: time.Now().Add(time.Hour), Urgency: webpush.UrgencyNormal, Topic: pushTopic(s.ID),
				Payload: func(context.Context) ([]byte, bool, error) {
					return notify.PushClose(s.ID, string(s.Status)), true, nil
				}})
		}
		return
	}
	q := notify.Question{ID: s.ID, Message: s.Message, Agent: handlers.AgentName(s), Options: s.PredefinedOptions, Quick: feedback.Quick(s),
		Link: e.Link, AnswerURL: r.base + "/feedback/" + s.ID + "/quick", ExpiresAt: s.ExpiresAt}
	for _, p := range people {
		r.pusher.Send(notify.PushJob{Person: p, Event: notify.EventCreated, SessionID: s.ID,
			Deadline: s.ExpiresAt, Urgency: webpush.UrgencyHigh, Topic: pushTopic(s.ID),
			Payload: func(ctx context.Context) ([]byte, bool, error) {
				tok, err := r.token(ctx, s, len(q.Options) <= notify.MaxPushActions, feedback.ViaPush, p)
				return notify.PushQuestion(q, tok), err == nil, err
			}})
	}
	r.ntfy.Send(notify.NtfyJob{Event: notify.EventCreated, SessionID: s.ID,
		Build: func(ctx context.Context) (notify.NtfyMessage, bool, error) {
			tok, err := r.token(ctx, s, len(q.Options) <= notify.MaxNtfyActions, feedback.ViaNtfy, "")
			return notify.NtfyQuestion(q, tok), err == nil, err
		}})
}

// token issues an answer token when the notification will carry buttons.
func (r *reacher) token(ctx context.Context, s *store.Session, fits bool, via, by string) (string, error) {
	if !feedback.Quick(s) || !fits {
		return "", nil
	}
	tok, err := r.core.IssueAnswerToken(ctx, s, via, by)
	if errors.Is(err, store.ErrGone) {
		return "", nil // about to expire: a notification without buttons
	}
	return tok, err
}

func (r *reacher) close() {
	if r == nil {
		return
	}
	r.pusher.Close()
	r.ntfy.Close()
}

// newReacher builds push and ntfy for a configuration; nil when neither is
// configured.
func (h *Handler) newReacher(ctx context.Context, cfg *settings, core *feedback.Service, kv store.KV) (*reacher, error) {
	if h.Push == nil && len(h.Ntfy) == 0 {
		return nil, nil
	}
	if cfg.publicURL == "" {
		return nil, errors.New("push and notify ntfy send answer links and answer endpoints to people, so public_url is required with them")
	}
	r := &reacher{core: core, base: cfg.publicURL, logger: h.logger}
	repl := caddy.NewReplacer()
	if h.Push != nil {
		keys := notify.VAPIDKeys{Private: repl.ReplaceKnown(h.Push.VAPIDPrivateKey, ""), Public: repl.ReplaceKnown(h.Push.VAPIDPublicKey, "")}
		switch {
		case keys.Private == "" && keys.Public == "":
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			k, err := notify.LoadOrCreateVAPID(lctx, kv)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("push: %w", err)
			}
			keys = k
		case keys.Private == "" || keys.Public == "":
			return nil, errors.New("push: set both vapid_private_key and vapid_public_key, or neither (a pair is then generated and kept in the store)")
		}
		if err := notify.CheckVAPID(keys); err != nil {
			return nil, fmt.Errorf("push: %w", err)
		}
		subject := repl.ReplaceKnown(h.Push.Subject, "")
		if !strings.HasPrefix(subject, "mailto:") && !strings.HasPrefix(subject, "https://") || len(subject) < 10 {
			return nil, fmt.Errorf("push: subject must be mailto:<address> or an https URL that push services can reach you at, not %q", subject)
		}
		if h.Push.InsecureLoopbackForTests {
			h.logger.Warn("push insecure_loopback_for_tests is on: devices may register http push endpoints on loopback; never use this in production")
		}
		opt := notify.PushOptions{Keys: keys, Subject: subject, Subs: notify.Subscriptions{KV: kv},
			Delivery: notify.Delivery{Logger: h.logger.Named("push"), Observe: countDelivery}}
		if h.Push.InsecureLoopbackForTests {
			opt.Client = notify.PublicClient(true)
		}
		r.pusher = notify.NewPusher(opt)
	}
	if len(h.Ntfy) > 0 {
		var topics []notify.NtfyTopic
		for i, c := range h.Ntfy {
			t := notify.NtfyTopic{URL: repl.ReplaceKnown(c.URL, ""), Token: repl.ReplaceKnown(c.Token, "")}
			if _, _, err := notify.SplitNtfyTopic(t.URL); err != nil {
				r.close()
				return nil, fmt.Errorf("notify ntfy #%d: %w", i+1, err)
			}
			topics = append(topics, t)
		}
		n, err := notify.NewNtfy(topics, notify.NtfyOptions{Delivery: notify.Delivery{Logger: h.logger.Named("ntfy"), Observe: countDelivery}})
		if err != nil {
			r.close()
			return nil, err
		}
		r.ntfy = n
	}
	return r, nil
}

// unmarshalPush parses
//
//	push {
//		vapid_private_key {env.VAPID_PRIVATE_KEY}
//		vapid_public_key  <base64url>
//		subject           mailto:ops@example.com
//		insecure_loopback_for_tests
//	}
func (h *Handler) unmarshalPush(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("push takes no arguments on its line; put options in a block")
	}
	c := &PushConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "vapid_private_key":
			err = oneString(d, &c.VAPIDPrivateKey)
		case "vapid_public_key":
			err = oneString(d, &c.VAPIDPublicKey)
		case "subject":
			err = oneString(d, &c.Subject)
		case "insecure_loopback_for_tests":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.InsecureLoopbackForTests = true
		default:
			return d.Errf("unknown push option %q (known: vapid_private_key, vapid_public_key, subject, insecure_loopback_for_tests)", d.Val())
		}
		if err != nil {
			return err
		}
	}
	h.Push = c
	return nil
}

// unmarshalNtfy parses the rest of `notify ntfy <topic-url> { token <t> }`.
func (h *Handler) unmarshalNtfy(d *caddyfile.Dispenser) error {
	var c NtfyConfig
	if !d.NextArg() {
		return d.Errf("notify ntfy needs a topic URL, e.g. https://ntfy.sh/<topic>")
	}
	c.URL = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "token":
			if err := oneString(d, &c.Token); err != nil {
				return err
			}
		default:
			return d.Errf("unknown notify ntfy option %q (known: token)", d.Val())
		}
	}
	h.Ntfy = append(h.Ntfy, c)
	return nil
}

// newInbox builds /inbox when it is on.
func (h *Handler) newInbox(human *handlers.Human) (*handlers.Inbox, error) {
	if !h.Inbox {
		if h.Push != nil {
			return nil, errors.New("push needs the inbox (`inbox`, with `login`): that is where a person turns notifications on for a device")
		}
		return nil, nil
	}
	if h.login == nil {
		return nil, errors.New("inbox needs login (e.g. `login caddy` behind basic_auth): it shows the signed-in person's questions")
	}
	icfg := handlers.InboxConfig{Login: h.login}
	if h.reach != nil && h.reach.pusher != nil {
		icfg.Push, icfg.AllowLoopbackPush = h.reach.pusher, h.Push.InsecureLoopbackForTests
	}
	in, err := handlers.NewInbox(human, icfg)
	if err != nil {
		return nil, err
	}
	// Its sockets are hijacked too: closed on a reload or exit.
	h.stopHooks = append(h.stopHooks, in.Stop)
	return in, nil
}
