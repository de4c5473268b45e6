package validate

import (
	"bytes"
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// The fast path of decoding. Almost every body an agent sends is valid, and
// walking it with encoding/json's Decoder token by token (an allocation per
// token, a copy per member) was the largest cost of a create. So a body is
// first checked whole with utf8.Valid and json.Valid, which allocate nothing,
// and a valid one is then split by hand: once the JSON is known to be valid,
// finding where a member ends is only counting brackets outside strings.
// Whatever the fast path does not take (invalid input, a name not allowed or
// repeated, an escaped name) goes the slow way, which says what is wrong; so
// both accept the same bodies and give the same members (FuzzSplitObject
// holds them to that).

// splitObject is decodeObject for a body the fast path can take; ok is
// false for anything else. The members alias body.
func splitObject(body []byte, allowed []string) (fields map[string]json.RawMessage, ok bool) {
	if !utf8.Valid(body) || !json.Valid(body) {
		return nil, false
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, false
	}
	fields = make(map[string]json.RawMessage, 8)
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return fields, true
	}
	for {
		end := stringEnd(body, i)
		name := body[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			return nil, false // an escaped name: the slow way unescapes it
		}
		if allowed != nil && !slices.Contains(allowed, string(name)) {
			return nil, false
		}
		if _, dup := fields[string(name)]; dup {
			return nil, false
		}
		i = skipSpace(body, skipSpace(body, end)+1) // past the colon
		vend := valueEnd(body, i)
		fields[string(name)] = body[i:vend:vend]
		i = skipSpace(body, vend)
		if body[i] == '}' {
			return fields, true
		}
		i = skipSpace(body, i+1) // past the comma
	}
}

// splitArray splits a JSON array into its elements; ok is false when raw is
// not a valid array. The elements alias raw.
func splitArray(raw []byte) (elems []json.RawMessage, ok bool) {
	if !json.Valid(raw) {
		return nil, false
	}
	i := skipSpace(raw, 0)
	if raw[i] != '[' {
		return nil, false
	}
	i = skipSpace(raw, i+1)
	if raw[i] == ']' {
		return []json.RawMessage{}, true
	}
	for {
		end := valueEnd(raw, i)
		elems = append(elems, raw[i:end:end])
		i = skipSpace(raw, end)
		if raw[i] == ']' {
			return elems, true
		}
		i = skipSpace(raw, i+1)
	}
}

// plainString is the value of a JSON string that needs no unescaping (no
// backslash, valid UTF-8): the common case, read without encoding/json.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// The helpers below assume valid JSON (json.Valid has passed), so they need
// no error paths; every index they return is within the input.

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) { // a number, true, false or null
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}
