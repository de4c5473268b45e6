package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Form is what a question offers beyond its message and plain option
// labels: option details, several questions in one form, and what happens
// at the deadline. It never changes after Create. A session stored before
// forms existed has none (nil), which reads as a plain question whose
// deadline expires it; so old sessions decode unchanged.
type Form struct {
	// Options describe Session.PredefinedOptions, in the same order (labels
	// repeated): set only when at least one has a description or is
	// recommended. Answers still carry labels only.
	Options []Option `json:"options,omitempty"`
	// PreselectRecommended: the page starts with the recommended option
	// selected. Off by default, so that nothing is chosen for the person
	// unless the asker says so.
	PreselectRecommended bool `json:"preselectRecommended,omitempty"`
	// Questions, when set, make this a form of several questions whose
	// answer is Result.Answers.
	Questions []Question `json:"questions,omitempty"`
	// OnTimeout is what the deadline does; nil is TimeoutExpire.
	OnTimeout *TimeoutPolicy `json:"onTimeout,omitempty"`
	// Images describe the pictures the asker attached, in order. Their
	// bytes live apart, in the KV records named by ImageKey with the
	// question's TTL, so that reading a question never loads them.
	Images []ImageRef `json:"images,omitempty"`
	// WaitUntil, for TimeoutKeep, is the asker's own timeout: the agent's
	// blocking wait ends there with the question still pending, while the
	// question stays open until Session.ExpiresAt (the longest timeout the
	// configuration allows).
	WaitUntil time.Time `json:"waitUntil,omitzero"`
}

// ImageRef is one attached image: its type (found from its bytes), its
// text alternative and its size.
type ImageRef struct {
	MediaType string `json:"mediaType"`
	Alt       string `json:"alt,omitempty"`
	Bytes     int    `json:"bytes"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
}

// ImageChunk is how many bytes of an image one KV record holds. Redis
// allocates a value in size classes a quarter of a power of two apart, so
// a 1 MiB value (plus its header) takes 1.25 MiB; a chunk that fills its
// class exactly (64 KiB less room for the header) keeps an image's cost
// within a few per cent of its bytes, whatever its size.
const ImageChunk = 64<<10 - 256

// ImageChunks is how many records an image of size bytes takes.
func ImageChunks(size int) int { return max((size+ImageChunk-1)/ImageChunk, 1) }

// ImageKey is the KV key of chunk c of image n of question id.
func ImageKey(id string, n, c int) string { return fmt.Sprintf("img:%s:%d:%d", id, n, c) }

// Option is one predefined answer with its details.
type Option struct {
	Label       string `json:"label"`
	Description string `json:"description,omitempty"`
	Recommended bool   `json:"recommended,omitempty"`
}

// The kinds of question a form may hold.
const (
	KindSingle  = "single"  // pick one of Options
	KindMulti   = "multi"   // pick any of Options
	KindText    = "text"    // write text
	KindBoolean = "boolean" // yes or no
	KindNumber  = "number"  // a number
)

// Question is one question of a form.
type Question struct {
	ID       string   `json:"id"`
	Message  string   `json:"message"`
	Kind     string   `json:"kind"`
	Options  []Option `json:"options,omitempty"`
	Required bool     `json:"required,omitempty"`
	// Default is the value the page starts with, of the kind's type.
	Default json.RawMessage `json:"default,omitempty"`
	// Min and Max bound a number's value, a text's length in characters
	// and how many options a multi picks.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
}

// The actions of a timeout policy.
const (
	TimeoutExpire = "expire" // the question expires unanswered (the default)
	TimeoutChoose = "choose" // the question ends with Option, marked as chosen by the timeout
	TimeoutKeep   = "keep"   // the agent's wait ends at its timeout; the question stays open longer
)

// TimeoutPolicy is what a question's deadline does.
type TimeoutPolicy struct {
	Action string `json:"action"`
	Option string `json:"option,omitempty"`
}

// ViaTimeout is Result.Via of an answer a timeout policy gave.
const ViaTimeout = "timeout"

// timeoutResult is the result an expired session carries: the asker's
// chosen option when its policy is choose, flagged so that nobody takes it
// for the person's choice; nil otherwise. It is derived from what never
// changes (the form and the deadline), so every reader on every instance
// and both backends derive the same one, exactly once, from the single
// pending → expired transition each backend already makes atomically.
func (s *Session) timeoutResult() *Result {
	if s.Status != StatusExpired || s.Form == nil || s.Form.OnTimeout == nil || s.Form.OnTimeout.Action != TimeoutChoose {
		return nil
	}
	return &Result{
		SelectedOptions: []string{s.Form.OnTimeout.Option},
		SubmittedAt:     s.ExpiresAt,
		Via:             ViaTimeout,
		ByTimeout:       true,
	}
}

// Clone deep-copies f; nil stays nil.
func (f *Form) Clone() *Form {
	if f == nil {
		return nil
	}
	c := *f
	c.Options = slices.Clone(f.Options)
	c.Images = slices.Clone(f.Images)
	if f.Questions != nil {
		c.Questions = make([]Question, len(f.Questions))
		for i, q := range f.Questions {
			q.Options = slices.Clone(q.Options)
			q.Default = bytes.Clone(q.Default)
			if q.Min != nil {
				v := *q.Min
				q.Min = &v
			}
			if q.Max != nil {
				v := *q.Max
				q.Max = &v
			}
			c.Questions[i] = q
		}
	}
	if f.OnTimeout != nil {
		p := *f.OnTimeout
		c.OnTimeout = &p
	}
	return &c
}

// footprint estimates f's heap size, for caches that bound memory.
func (f *Form) footprint() int {
	if f == nil {
		return 0
	}
	n := 128
	for _, im := range f.Images {
		n += 64 + len(im.MediaType) + len(im.Alt)
	}
	for _, o := range f.Options {
		n += 48 + len(o.Label) + len(o.Description)
	}
	for _, q := range f.Questions {
		n += 160 + len(q.ID) + len(q.Message) + len(q.Default)
		for _, o := range q.Options {
			n += 48 + len(o.Label) + len(o.Description)
		}
	}
	return n
}
