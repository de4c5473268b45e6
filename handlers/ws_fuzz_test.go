package handlers

import (
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// FuzzWSFirstMessage: the browser's first WebSocket message is parsed
// without panicking, and only a well-formed authenticate message with a
// plausible token is accepted.
func FuzzWSFirstMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"authenticate","data":{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAA"}}`,
		`{"type":"authenticate","data":{"token":""}}`, `{"type":"auth"}`, `{"type":"authenticate","data":"x"}`,
		`[]`, `null`, "\xff", `{"type":"authenticate","data":{"token":"` + strings.Repeat("A", 5000) + `"}}`,
	} {
		f.Add(int(websocket.MessageText), []byte(s))
	}
	f.Fuzz(func(t *testing.T, typ int, data []byte) {
		tok, ok := parseAuthMessage(websocket.MessageType(typ), data)
		if !ok {
			return
		}
		if websocket.MessageType(typ) != websocket.MessageText || tok == "" || len(tok) > len(data) {
			t.Fatalf("accepted %q (type %d) as token %q", data, typ, tok)
		}
	})
}
