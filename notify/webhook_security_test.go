package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

type outcome struct{ receiver, event, outcome string }

// observed returns an Observe hook and the channel it reports to.
func observed() (func(string, string, string), chan outcome) {
	ch := make(chan outcome, 100)
	return func(r, e, o string) { ch <- outcome{r, e, o} }, ch
}

func nextOutcome(t *testing.T, ch chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery outcome")
		return outcome{}
	}
}

// TestSlackTextIsEscaped: whatever an agent writes reaches a Slack-format
// receiver as text: no mention, no link with a label of the agent's choosing.
func TestSlackTextIsEscaped(t *testing.T) {
	for _, tc := range []struct {
		name, message string
		options       []string
		want, never   []string
	}{
		{name: "channel ping", message: "<!channel> deploy?", want: []string{"&lt;!channel&gt; deploy?"}, never: []string{"<!channel>"}},
		{name: "disguised link", message: "see <https://evil.example|the docs>",
			want: []string{"&lt;https://evil.example|the docs&gt;"}, never: []string{"<https://evil.example"}},
		{name: "user and group mentions", message: "<@U123> <!subteam^S1> <#C1>", never: []string{"<@U123>", "<!subteam", "<#C1>"}},
		{name: "entities stay literal", message: "a &lt; b && c > d", want: []string{"a &amp;lt; b &amp;&amp; c &gt; d"}},
		{name: "options", message: "Pick", options: []string{"<!here>", "<https://evil.example|yes>"},
			want: []string{"&lt;!here&gt; · &lt;https://evil.example|yes&gt;"}, never: []string{"<!here>", "<https://evil"}},
		{name: "bare broadcast words", message: "@channel @here @everyone @all hi", options: []string{"@alice"},
			want: []string{"@\u200bchannel @\u200bhere @\u200beveryone @\u200ball hi", "@\u200balice"}},
		{name: "addresses are not mentions", message: "mail bob@example.com or @ noon", want: []string{"bob@example.com or @ noon"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := session()
			s.Message, s.PredefinedOptions = tc.message, tc.options
			ev := Event{Event: EventCreated, Message: s.Message, Options: s.PredefinedOptions, FeedbackURL: "https://fb.example/feedback/x#t=cap"}
			body, _, _, err := render(Webhook{Format: FormatSlack}, ev)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]string
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			text := m["text"]
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("text %q lacks %q", text, w)
				}
			}
			for _, n := range tc.never {
				if strings.Contains(text, n) {
					t.Errorf("text %q contains %q", text, n)
				}
			}
			if strings.Count(text, "<") != 0 || strings.Count(text, ">") != 0 {
				t.Errorf("text %q keeps a Slack control character", text)
			}
			if !strings.Contains(text, "Answer: https://fb.example/feedback/x#t=cap") {
				t.Errorf("text %q lost the answer link", text)
			}
		})
	}
}

// TestNtfyIsPlainText: the ntfy body is the question as it was written,
// sent as text/plain and never with a Markdown switch, even one configured
// as an extra header.
func TestNtfyIsPlainText(t *testing.T) {
	srv, got := receiver(t)
	n := New([]Webhook{{URL: srv.URL, Format: FormatNtfy, Headers: map[string]string{
		"Markdown": "yes", "X-Markdown": "1", "md": "true", "Content-Type": "text/markdown", "Priority": "high"}}}, Options{})
	defer n.Close()
	s := session()
	s.Message = "**urgent** [click](https://evil.example) ![x](https://evil.example/t.png)"
	n.Send(EventCreated, s, "https://fb.example/feedback/x#t=cap")
	r := next(t, got)
	if string(r.body) != s.Message {
		t.Fatalf("body %q, want the message verbatim", r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, h := range []string{"Markdown", "X-Markdown", "Md"} {
		if v := r.header.Get(h); v != "" {
			t.Fatalf("header %s: %q turns Markdown on", h, v)
		}
	}
	if r.header.Get("Priority") != "high" {
		t.Fatal("other configured headers must still be sent")
	}
}

// TestFailureLogsOnlySchemeAndHost: Slack and ntfy URLs are secrets; a
// failed delivery names the receiver by scheme and host only.
func TestFailureLogsOnlySchemeAndHost(t *testing.T) {
	refused := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		return "http://" + addr
	}
	failing := func(t *testing.T) string {
		srv, _ := receiver(t, 500, 500, 500)
		return srv.URL
	}
	hanging := func(t *testing.T) string {
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client going away
			<-r.Context().Done()
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	const secret = "T0000/B0000/XXXXsecretXXXX"
	for name, base := range map[string]func(*testing.T) string{"connection refused": refused, "5xx": failing, "timeout": hanging} {
		t.Run(name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			obs, outcomes := observed()
			u := base(t)
			n := New([]Webhook{{URL: u + "/services/" + secret + "?topic=" + secret, Format: FormatSlack}}, Options{Delivery: Delivery{
				MaxAttempts: 2, Sleep: func(context.Context, time.Duration) {}, Logger: zap.New(core), Observe: obs,
				Client: &http.Client{Timeout: 200 * time.Millisecond}}})
			defer n.Close()
			n.Send(EventCreated, session(), "")
			if o := nextOutcome(t, outcomes); o.outcome != OutcomeFailed || o.receiver != u {
				t.Fatalf("outcome %+v, want failed for %s", o, u)
			}
			entries := logs.All()
			if len(entries) == 0 {
				t.Fatal("a failed delivery was not logged")
			}
			for _, e := range entries {
				line := e.Message + fmt.Sprint(e.ContextMap())
				if strings.Contains(line, "XXXXsecretXXXX") || strings.Contains(line, "/services/") {
					t.Fatalf("log line leaks the webhook URL: %s", line)
				}
				if e.ContextMap()["receiver"] != u {
					t.Fatalf("log line does not name the receiver %s: %s", u, line)
				}
			}
		})
	}
	if got := Redact("https://user:pw@hooks.slack.com:443/services/" + secret + "?x=1#f"); got != "https://hooks.slack.com:443" {
		t.Fatalf("Redact = %q", got)
	}
	if got := Redact("::not a url " + secret); strings.Contains(got, secret) {
		t.Fatalf("Redact = %q", got)
	}
}

// TestDeadReceiverDoesNotDelayOthers: a receiver that never answers holds
// only its own workers; another receiver gets its events meanwhile.
func TestDeadReceiverDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	var finished atomic.Int32
	entered := make(chan struct{}, 100)
	dead := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		finished.Add(1)
	}))
	t.Cleanup(dead.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets the dead receiver's handlers return
	healthy, got := receiver(t)
	// No client timeout: the dead receiver holds a worker for as long as
	// it likes, which is what a shared worker pool cannot survive.
	n := New([]Webhook{
		{URL: dead.URL, Events: []string{EventCreated}},
		{URL: healthy.URL, Events: []string{EventExpired}},
	}, Options{Delivery: Delivery{Client: &http.Client{}}})
	defer n.Close()
	for range 8 { // more than any number of shared workers would absorb
		n.Send(EventCreated, session(), "")
	}
	<-entered // the dead receiver is holding a request now
	n.Send(EventExpired, session(), "")
	r := next(t, got)
	if r.header.Get("X-Feedback-Event") != EventExpired {
		t.Fatalf("healthy receiver got %q", r.header.Get("X-Feedback-Event"))
	}
	if finished.Load() != 0 {
		t.Fatal("the dead receiver answered; the test proves nothing")
	}
}

// TestFullQueueDropsOldest: a receiver whose queue is full loses its oldest
// waiting events, logged and counted; Send never waits.
func TestFullQueueDropsOldest(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		entered <- r.Header.Get("X-Feedback-Delivery")
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	core, logs := observer.New(zapcore.WarnLevel)
	obs, outcomes := observed()
	n := New([]Webhook{{URL: srv.URL}}, Options{Workers: 1, Delivery: Delivery{QueueSize: 2, Client: &http.Client{}, Logger: zap.New(core), Observe: obs}})
	defer n.Close()
	sessions := make([]*store.Session, 6)
	for i := range sessions {
		sessions[i] = session()
		sessions[i].ID = fmt.Sprintf("s%d", i)
	}
	n.Send(EventCreated, sessions[0], "")
	<-entered // the only worker is stuck on s0; the queue is empty
	for _, s := range sessions[1:] {
		n.Send(EventCreated, s, "")
	}
	// s1..s5 into a queue of 2: s1, s2, s3 are dropped, oldest first.
	for i := range 3 {
		if o := nextOutcome(t, outcomes); o.outcome != OutcomeDropped || o.receiver != srv.URL || o.event != EventCreated {
			t.Fatalf("drop %d: %+v", i, o)
		}
	}
	var dropped []string
	for _, e := range logs.FilterMessageSnippet("queue full").All() {
		dropped = append(dropped, e.ContextMap()["session"].(string))
	}
	if strings.Join(dropped, ",") != "s1,s2,s3" {
		t.Fatalf("dropped %v, want the oldest (s1,s2,s3)", dropped)
	}
}

// TestRedirectsAreNotFollowed: a 3xx is a failed delivery, sent once, and
// the body (with the answer link) never reaches the redirect's target.
func TestRedirectsAreNotFollowed(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(target.Close)
	for _, status := range []int{301, 302, 303, 307, 308} {
		for _, own := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d own client %v", status, own), func(t *testing.T) {
				var hits atomic.Int32
				redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					hits.Add(1)
					http.Redirect(w, r, target.URL+"/stolen", status)
				}))
				t.Cleanup(redirector.Close)
				var sleeps atomic.Int32
				obs, outcomes := observed()
				opt := Options{Delivery: Delivery{Observe: obs, Sleep: func(context.Context, time.Duration) { sleeps.Add(1) }}}
				var client *http.Client
				if own {
					client = &http.Client{Timeout: 5 * time.Second}
					opt.Client = client
				}
				n := New([]Webhook{{URL: redirector.URL}}, opt)
				defer n.Close()
				n.Send(EventCreated, session(), "https://fb.example/feedback/x#t=cap")
				if o := nextOutcome(t, outcomes); o.outcome != OutcomeFailed {
					t.Fatalf("outcome %+v, want failed", o)
				}
				if hits.Load() != 1 || sleeps.Load() != 0 {
					t.Fatalf("%d requests and %d waits; a redirect must not be retried", hits.Load(), sleeps.Load())
				}
				if targetHits.Load() != 0 {
					t.Fatal("the redirect was followed")
				}
				if own && client.CheckRedirect != nil {
					t.Fatal("the caller's client was changed")
				}
			})
		}
	}
}

// TestAnsweredEvent: session.answered says who, when and how; the answer
// itself only goes to webhooks that asked for it.
func TestAnsweredEvent(t *testing.T) {
	srv, got := receiver(t)
	n := New([]Webhook{
		{URL: srv.URL + "/plain"},
		{URL: srv.URL + "/with", IncludeAnswer: true},
		{URL: srv.URL + "/slack", Format: FormatSlack, IncludeAnswer: true},
		{URL: srv.URL + "/created-only", Events: []string{EventCreated}},
	}, Options{})
	defer n.Close()
	s := session()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Status = store.StatusSubmitted
	s.Result = &store.Result{SelectedOptions: []string{"yes"}, FreeText: "ship it <!channel>", SubmittedAt: at, Via: "owner", AnsweredBy: "alice"}
	n.Send(EventAnswered, s, "")
	var bodies []string
	for range 3 {
		bodies = append(bodies, string(next(t, got).body))
	}
	var plain, with map[string]any
	var slack map[string]string
	for _, b := range bodies {
		switch {
		case strings.HasPrefix(b, `{"text"`):
			_ = json.Unmarshal([]byte(b), &slack)
		case strings.Contains(b, "freeText"):
			_ = json.Unmarshal([]byte(b), &with)
		default:
			_ = json.Unmarshal([]byte(b), &plain)
		}
	}
	if plain == nil || with == nil || slack == nil {
		t.Fatalf("bodies %v", bodies)
	}
	for name, ev := range map[string]map[string]any{"plain": plain, "with answer": with} {
		a, _ := ev["answer"].(map[string]any)
		if ev["event"] != EventAnswered || a["via"] != "owner" || a["answeredBy"] != "alice" || a["submittedAt"] != "2030-01-02T03:04:05Z" {
			t.Fatalf("%s: %v", name, ev)
		}
	}
	if a := plain["answer"].(map[string]any); a["freeText"] != nil || a["selectedOptions"] != nil {
		t.Fatalf("the answer went to a webhook without include_answer: %v", a)
	}
	if a := with["answer"].(map[string]any); a["freeText"] != "ship it <!channel>" || fmt.Sprint(a["selectedOptions"]) != "[yes]" {
		t.Fatalf("answer %v", a)
	}
	if text := slack["text"]; !strings.Contains(text, "A question was answered") || !strings.Contains(text, "Answer: yes · ship it &lt;!channel&gt;") {
		t.Fatalf("slack text %q", text)
	}
	select {
	case r := <-got:
		t.Fatalf("unexpected delivery %s", r.body)
	default:
	}
}
