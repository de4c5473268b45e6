package mcpfeedback

import (
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/notify"
)

// lifecycle turns the events of a question's life into metrics, one log
// line per event and webhooks. It lives in the pool beside its store and
// subscribes to the core's one event stream, so it sees the events of
// every configuration that shares that store; the logger and the webhooks
// are the newest configuration's. It also counts what the transports see
// (handlers.Observer).
type lifecycle struct {
	logger atomic.Pointer[zap.Logger]
	// notifier is the newest configuration's webhooks (nil: none).
	notifier atomic.Pointer[notify.Notifier]
	// reach is the newest configuration's push and ntfy (nil: none).
	reach       atomic.Pointer[reacher]
	unsubscribe func()
}

func newLifecycle(hub *feedback.Hub) *lifecycle {
	l := &lifecycle{}
	l.logger.Store(zap.NewNop())
	l.unsubscribe = hub.Subscribe(l.event)
	return l
}

func (l *lifecycle) close() { l.unsubscribe() }

// event is the subscriber. It never logs the answer itself.
func (l *lifecycle) event(e feedback.Event) {
	s := e.Session
	log := l.logger.Load()
	l.reach.Load().event(e)
	switch e.Kind {
	case feedback.EventCreated:
		countCreated(s)
		l.notifier.Load().Send(notify.EventCreated, s, e.Link)
		fields := []zap.Field{zap.String("session", s.ID), zap.String("sub", s.Owner.Subject),
			zap.Duration("timeout", s.ExpiresAt.Sub(s.CreatedAt)), zap.Int("options", len(s.PredefinedOptions))}
		if len(s.To) > 0 {
			fields = append(fields, zap.Strings("to", s.To))
		}
		log.Info("session created", fields...)
		return
	case feedback.EventAnswered:
		l.notifier.Load().Send(notify.EventAnswered, s, "")
	case feedback.EventExpired:
		l.notifier.Load().Send(notify.EventExpired, s, "")
	case feedback.EventCancelled:
		l.notifier.Load().Send(notify.EventCancelled, s, "")
	}
	countChange(s)
	fields := []zap.Field{zap.String("session", s.ID), zap.String("sub", s.Owner.Subject),
		zap.String("outcome", string(s.Status)), zap.Duration("latency", latency(s))}
	if s.Result != nil {
		fields = append(fields, zap.String("via", s.Result.Via))
		if s.Result.AnsweredBy != "" {
			fields = append(fields, zap.String("answered_by", s.Result.AnsweredBy))
		}
	}
	log.Info("session "+string(s.Status), fields...)
}

// AuthFailed implements handlers.Observer.
func (l *lifecycle) AuthFailed(reason string) { metricAuthFailures.WithLabelValues(reason).Inc() }

// StoreFailed implements handlers.Observer.
func (l *lifecycle) StoreFailed(op string) { metricStoreErrors.WithLabelValues(op).Inc() }

// WebSockets implements handlers.Observer.
func (l *lifecycle) WebSockets(delta int) { metricWebSockets.Add(float64(delta)) }

// MCPSessions implements handlers.Observer.
func (l *lifecycle) MCPSessions(delta int) { metricMCPSessions.Add(float64(delta)) }

// ToolCall implements handlers.Observer.
func (l *lifecycle) ToolCall(tool, outcome string) {
	metricToolCalls.WithLabelValues(tool, outcome).Inc()
}
