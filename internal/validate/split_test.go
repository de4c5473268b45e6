package validate

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzSplitObject holds the fast path to the slow one: whatever body the
// fast path takes, the slow path takes too, with the same members; and the
// fast path's arrays and strings are what encoding/json reads.
func FuzzSplitObject(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"message":"hi"}`, "{\"message\" :\t\"hi\" ,\n\"timeout\": 300 }\n",
		`{"message":"a\"b\\c\u00e9","predefinedOptions":["a", {"label":"b]}","x":[1,{"y":"}"}]}], "metadata":{"a":[true,false,null,-1.5e3]}}`,
		`{"message":"hi","message":"x"}`, `{"mess\u0061ge":"hi"}`, `{"MESSAGE":"hi"}`, `{"message":"hi"} x`, `[1,2]`, `"s"`,
		`{"message":"hi",}`, "{\"message\":\"\xff\"}", `{"a":{"b":{"c":[[[]]]}}}`, `{"selectedOptions":["a","b"],"nonce":"n1"}`,
		`{"message":"é ü 中文 🎉"}`, `{"message":"tab\there"}`, `{"x":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, allowed := range [][]string{nil, append(createFields, "wait"), {"selectedOptions", "freeText", "nonce", "answers", "attachments"}} {
			fast, ok := splitObject(body, allowed)
			if !ok {
				continue
			}
			slow, verr := decodeObjectSlow(body, allowed)
			if verr != nil {
				t.Fatalf("fast path took %q, slow path refused it: %v", body, verr)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%q: fast %q, slow %q", body, fast, slow)
			}
			for name, raw := range fast {
				if elems, ok := splitArray(raw); ok {
					var want []json.RawMessage
					if err := json.Unmarshal(raw, &want); err != nil || !reflect.DeepEqual(elems, want) {
						t.Fatalf("%s %q: split %q, encoding/json %q (%v)", name, raw, elems, want, err)
					}
				}
				if s, ok := plainString(raw); ok {
					var want string
					if err := json.Unmarshal(raw, &want); err != nil || s != want {
						t.Fatalf("%s %q: plain %q, encoding/json %q (%v)", name, raw, s, want, err)
					}
				}
			}
		}
	})
}
