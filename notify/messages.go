package notify

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// Question is what a notification about a new question shows.
type Question struct {
	ID string
	// Message is the question as the agent wrote it; notifications show its
	// first line.
	Message string
	// Agent is the asking agent's display name ("" when unknown).
	Agent   string
	Options []string
	// Quick: single choice with options, so one tap can answer it.
	Quick bool
	// Link opens the question (the answer link).
	Link string
	// AnswerURL is the one-tap endpoint, <base>/feedback/<id>/quick.
	AnswerURL string
	ExpiresAt time.Time
}

// FirstLine is the first non-empty line of s, at most n characters.
func FirstLine(s string, n int) string {
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			return truncate(line, n)
		}
	}
	return ""
}

// MaxPushActions is how many action buttons a push notification gets:
// the platform limit (Chrome's Notification.maxActions is 2).
const MaxPushActions = 2

// PushPayload is the JSON a service worker gets in a push event.
type PushPayload struct {
	// Type is "question" (show a notification) or "close" (close the
	// notification of question ID: answered elsewhere, withdrawn, expired).
	Type  string `json:"type"`
	ID    string `json:"id"`
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	Agent string `json:"agent,omitempty"`
	URL   string `json:"url,omitempty"`
	// Options are the action buttons, one per option; present only when
	// the question can be answered with one tap and has at most
	// MaxPushActions options.
	Options []string `json:"options,omitempty"`
	// Token is the per-question answer token the service worker posts
	// with the tapped option to AnswerURL.
	Token     string    `json:"token,omitempty"`
	AnswerURL string    `json:"answerUrl,omitempty"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	Status    string    `json:"status,omitempty"`
}

// maxPushPlain keeps a payload inside one 4 KiB record (webpush-go pads to
// 4096 bytes, leaving 3993 for the payload).
const maxPushPlain = 3900

// PushQuestion is the push payload for a new question. token is "" when
// the question cannot be answered with one tap.
func PushQuestion(q Question, token string) []byte {
	p := PushPayload{Type: "question", ID: q.ID, Title: FirstLine(q.Message, 120), Agent: truncate(q.Agent, 60),
		URL: q.Link, ExpiresAt: q.ExpiresAt}
	if p.Title == "" {
		p.Title = "…"
	}
	if q.Quick && token != "" && len(q.Options) <= MaxPushActions {
		p.Options, p.Token, p.AnswerURL = q.Options, token, q.AnswerURL
	}
	b, _ := json.Marshal(p)
	if len(b) > maxPushPlain {
		// Options are at most a few hundred bytes; the title was cut
		// already. Only a huge agent name or link could get here.
		p.Agent = ""
		b, _ = json.Marshal(p)
	}
	return b
}

// PushClose is the payload that closes question id's notification.
func PushClose(id, status string) []byte {
	b, _ := json.Marshal(PushPayload{Type: "close", ID: id, Status: status})
	return b
}

// maxNtfyMessage keeps a message under ntfy's 4096-byte limit, with room
// for the title and actions.
const maxNtfyMessage = 3000

// NtfyQuestion is the ntfy message for a new question: its text, a click
// that opens it, and, when one tap can answer it, an `http` button per
// option (at most MaxNtfyActions) that posts the answer token and the
// option in the body, plus a `view` button when there is room.
func NtfyQuestion(q Question, token string) NtfyMessage {
	msg := q.Message
	for len(msg) > maxNtfyMessage {
		_, size := utf8.DecodeLastRuneInString(msg)
		msg = msg[:len(msg)-size]
	}
	title := "A question is waiting for you"
	if q.Agent != "" {
		title = truncate(q.Agent, 60) + " asks"
	}
	m := NtfyMessage{Title: title, Message: msg, Tags: []string{"question"}, Priority: 4, Click: q.Link}
	if q.Quick && token != "" && len(q.Options) <= MaxNtfyActions {
		for _, o := range q.Options {
			body, _ := json.Marshal(map[string]string{"token": token, "option": o})
			m.Actions = append(m.Actions, NtfyAction{Action: "http", Label: truncate(o, 40), URL: q.AnswerURL, Method: "POST",
				Headers: map[string]string{"Content-Type": "application/json"}, Body: string(body), Clear: true})
		}
	}
	if len(m.Actions) < MaxNtfyActions && q.Link != "" {
		m.Actions = append(m.Actions, NtfyAction{Action: "view", Label: "Open", URL: q.Link})
	}
	return m
}
