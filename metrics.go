package mcpfeedback

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// The collectors are package-level so their values survive config reloads:
// each configuration gets a fresh registry from Caddy, and registering the
// same collector again keeps counting where it left off (the approach of
// caddy-ratelimit). With several instances, sum over instances: each
// session's creation and its one state change are counted once, by the
// instance that performed them.
var (
	metricSessions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "sessions_total",
		Help: "Sessions by lifecycle event: created, submitted (answered), expired, cancelled.",
	}, []string{"event"})
	metricPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "sessions_pending",
		Help: "Sessions created here minus sessions finished here; the sum over instances is the number waiting for an answer.",
	})
	metricTimeToAnswer = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "time_to_answer_seconds",
		Help:    "Time from a question's creation to its answer.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600},
	})
	metricAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "auth_failures_total",
		Help: "Requests refused for their credentials, by reason.",
	}, []string{"reason"})
	metricStoreErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "store_errors_total",
		Help: "Session store failures (unreachable, timeouts), by operation.",
	}, []string{"op"})

	metricWebSockets = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "websockets_open",
		Help: "WebSocket watchers connected to this instance.",
	})
	metricMCPSessions = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "mcp_sessions",
		Help: "MCP sessions (Streamable HTTP and SSE) open on this instance.",
	})
	metricToolCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "mcp_tool_calls_total",
		Help: "MCP tool calls by tool and outcome (ok, tool_error, cancelled, error, refused, task).",
	}, []string{"tool", "outcome"})
	metricDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mcp_feedback", Name: "webhook_deliveries_total",
		Help: "Webhook deliveries by event and outcome (delivered, failed, dropped).",
	}, []string{"event", "outcome"})
)

var collectors = []prometheus.Collector{metricSessions, metricPending, metricTimeToAnswer, metricAuthFailures, metricStoreErrors,
	metricWebSockets, metricMCPSessions, metricToolCalls, metricDeliveries}

// registerMetrics adds the collectors to a configuration's registry.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// countChange records one state change made by this instance.
func countChange(s *store.Session) {
	metricSessions.WithLabelValues(string(s.Status)).Inc()
	metricPending.Dec()
	if s.Status == store.StatusSubmitted && s.Result != nil {
		metricTimeToAnswer.Observe(s.Result.SubmittedAt.Sub(s.CreatedAt).Seconds())
	}
}

func countCreated(*store.Session) {
	metricSessions.WithLabelValues("created").Inc()
	metricPending.Inc()
}

// latency is how long a finished session was open.
func latency(s *store.Session) time.Duration {
	if s.Status == store.StatusSubmitted && s.Result != nil {
		return s.Result.SubmittedAt.Sub(s.CreatedAt)
	}
	return s.UpdatedAt.Sub(s.CreatedAt)
}

// countDelivery is notify's Observe: the receiver (scheme and host) is not
// a label, so that a config with many receivers keeps a small series set.
func countDelivery(_, event, outcome string) {
	metricDeliveries.WithLabelValues(event, outcome).Inc()
}
