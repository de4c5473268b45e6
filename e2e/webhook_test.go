package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type hookCall struct {
	header http.Header
	body   []byte
}

// TestWebhook: a real local receiver gets a signed session.created event
// with the answer link, and session.expired when a question nobody waits
// for runs out; a receiver that hangs delays no create.
func TestWebhook(t *testing.T) {
	calls := make(chan hookCall, 20)
	release := make(chan struct{})
	hold := make(chan struct{}, 1)
	hold <- struct{}{} // the first delivery hangs until release
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		calls <- hookCall{r.Header.Clone(), body}
		select {
		case <-hold:
			<-release
		default:
		}
	}))
	defer recv.Close()
	defer close(release)

	c := startCaddy(t, `
http://127.0.0.1:{HTTP} {
	mcp_feedback {
		jwt_secret {env.JWT_SECRET}
		public_url http://127.0.0.1:{HTTP}
		min_timeout 1s
		notify webhook `+recv.URL+` {
			secret {env.HOOK_SECRET}
			header X-Receiver-Key k1
		}
	}
}
`, "HOOK_SECRET=hook-secret")
	alice := token(t, "alice")
	next := func() hookCall {
		t.Helper()
		select {
		case hc := <-calls:
			return hc
		case <-time.After(20 * time.Second):
			t.Fatal("no webhook call")
			return hookCall{}
		}
	}
	first, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"Deploy?","predefinedOptions":["yes","no"]}`)
	hc := next() // now hanging in the receiver
	// Creates go on while the receiver hangs.
	for range 3 {
		createSession(t, c.Client, c.HTTP, alice, `{"message":"meanwhile"}`)
	}
	mac := hmac.New(sha256.New, []byte("hook-secret"))
	mac.Write(hc.body)
	if hc.header.Get("X-Feedback-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) || hc.header.Get("X-Receiver-Key") != "k1" || hc.header.Get("X-Feedback-Delivery") == "" {
		t.Fatalf("headers %v", hc.header)
	}
	var ev struct {
		Event, SessionID, FeedbackURL, Message string
	}
	if err := json.Unmarshal(hc.body, &ev); err != nil || ev.Event != "session.created" || ev.SessionID != first.SessionID || ev.FeedbackURL != first.FeedbackURL || ev.Message != "Deploy?" {
		t.Fatalf("created event %s", hc.body)
	}

	// An answer is announced with how it arrived, without its text
	// (include_answer is off).
	answered, answeredTok := createSession(t, c.Client, c.HTTP, alice, `{"message":"Ship?","predefinedOptions":["yes","no"]}`)
	if r := do(t, c.Client, "POST", c.HTTP+"/api/feedback/"+answered.SessionID+"/submit", `{"selectedOptions":["yes"],"freeText":"private words"}`,
		"X-Feedback-Token", answeredTok); r.Status != 200 {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	for {
		hc = next()
		var ans struct {
			Event, SessionID string
			Answer           *struct{ Via string }
		}
		if err := json.Unmarshal(hc.body, &ans); err != nil {
			t.Fatal(err)
		}
		if ans.Event != "session.answered" {
			continue
		}
		if ans.SessionID != answered.SessionID || ans.Answer == nil || ans.Answer.Via != "link" ||
			strings.Contains(string(hc.body), "private words") || strings.Contains(string(hc.body), "#t=") {
			t.Fatalf("answered event %s (must say via link, and carry neither the answer nor a link)", hc.body)
		}
		break
	}

	short, _ := createSession(t, c.Client, c.HTTP, alice, `{"message":"quick","timeout":1}`)
	for {
		hc = next()
		if err := json.Unmarshal(hc.body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Event == "session.expired" {
			break
		}
	}
	if ev.SessionID != short.SessionID || strings.Contains(string(hc.body), "#t=") {
		t.Fatalf("expired event %s (must name the session and carry no link)", hc.body)
	}
}
