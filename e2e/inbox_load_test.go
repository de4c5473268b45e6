package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestInboxThousandOpenQuestions: a person with 1,000 open questions sees
// every one of them in the inbox (their order is feedback's
// TestInboxNewestFirstOwnOnly: here many share a millisecond). How long the page takes to
// show them (request, render, in headless Chromium on this machine) is
// logged as a figure, not asserted.
func TestInboxThousandOpenQuestions(t *testing.T) {
	const n = 1000
	sites := strings.Replace(inboxSites(t), "\t\tinbox\n", "\t\tinbox\n\t\tmax_pending_per_subject off\n\t\tcreates_per_minute off\n", 1)
	c := startCaddy(t, sites)
	alice := token(t, "alice")
	for i := range n {
		createSession(t, c.Client, c.HTTP, alice, fmt.Sprintf(`{"message":"Question %d: **ship** it?","predefinedOptions":["yes","no"]}`, i))
	}
	tab := aliceTab(t, c)
	start := time.Now()
	step(t, tab, "open the inbox", chromedp.Navigate(c.HTTP+"/inbox"))
	waitFor(t, tab, "1,000 cards", fmt.Sprintf(`document.querySelectorAll('#open li.card').length === %d`, n))
	took := time.Since(start)
	if title := eval[string](t, tab, `document.title`); title != fmt.Sprintf("(%d) Inbox", n) {
		t.Errorf("title %q", title)
	}
	t.Logf("inbox with %d open questions: all cards shown %v after navigation began", n, took.Round(time.Millisecond))
}
