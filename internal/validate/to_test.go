package validate

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestDecodeTo: `to` is refused unless the site allows addressing, and
// then must be a short list of distinct, printable person ids; every
// refusal says what was wrong.
func TestDecodeTo(t *testing.T) {
	on := DefaultLimits()
	on.AllowAddressing = true
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = fmt.Sprintf("%q", fmt.Sprint("p", i))
	}
	cases := []struct {
		name, to string
		lim      Limits
		want     []string // nil with wantErr
		wantErr  string
	}{
		{"off", `["bob"]`, DefaultLimits(), nil, "allow_addressing"},
		{"off, even empty", `[]`, DefaultLimits(), nil, "allow_addressing"},
		{"null is absent", `null`, DefaultLimits(), nil, ""},
		{"two people", `["bob","carol@example.com"]`, on, []string{"bob", "carol@example.com"}, ""},
		{"empty list", `[]`, on, nil, ""},
		{"not a list", `"bob"`, on, nil, "to must be an array"},
		{"an object", `{"bob":true}`, on, nil, "to must be an array"},
		{"a number inside", `["bob",7]`, on, nil, "to[1] must be a string"},
		{"null inside", `[null]`, on, nil, "to[0] must be a string"},
		{"too many", "[" + strings.Join(eleven, ",") + "]", on, nil, "to has 11 people; the limit is 10"},
		{"duplicate", `["bob","carol","bob"]`, on, nil, `to[2] repeats to[0] ("bob")`},
		{"empty id", `[""]`, on, nil, "to[0] must not be empty"},
		{"spaces around", `[" bob"]`, on, nil, "to[0] has spaces at its start or end"},
		{"control character", `["bo\u0007b"]`, on, nil, "to[0] contains the control character U+0007"},
		{"newline", `["bob\nmallory"]`, on, nil, "to[0] contains the control character U+000A"},
		{"bidi control", `["bob\u202e"]`, on, nil, "bidirectional control"},
		{"too long", `["` + strings.Repeat("x", MaxPersonID+1) + `"]`, on, nil, "at most 255"},
		{"broken surrogate", `["\ud800"]`, on, nil, "invalid character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _, verr := DecodeCreate([]byte(`{"message":"m","to":`+c.to+`}`), c.lim)
			if c.wantErr != "" {
				if verr == nil {
					t.Fatalf("accepted, to = %q", req.To)
				}
				if verr.Code != "invalid_request" || !strings.Contains(verr.Message, c.wantErr) {
					t.Fatalf("error %s %q, want one saying %q", verr.Code, verr.Message, c.wantErr)
				}
				return
			}
			if verr != nil {
				t.Fatalf("refused: %s", verr.Message)
			}
			if !slices.Equal(req.To, c.want) {
				t.Fatalf("to = %q, want %q", req.To, c.want)
			}
		})
	}
}
