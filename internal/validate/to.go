package validate

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxTo caps the people one question may be addressed to (`to`).
const MaxTo = 10

// MaxPersonID is the longest person id `to` accepts: OpenID Connect caps
// `sub` at 255 ASCII characters.
const MaxPersonID = 255

// decodeTo checks `to`: a list of up to MaxTo distinct person ids (the
// `sub` a person signs in with), accepted only when the site allows
// addressing, so that an agent cannot put questions in other people's
// inboxes unless the operator chose that.
func decodeTo(raw json.RawMessage, lim Limits) ([]string, *Error) {
	if !lim.AllowAddressing {
		return nil, invalid("to (addressing a question to other people) is off on this site; the operator turns it on with allow_addressing in the mcp_feedback block")
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil, invalid(`to must be an array of person ids, e.g. ["bob"]`)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return nil, invalid(`to must be an array of person ids, e.g. ["bob"]`)
	}
	if len(arr) > MaxTo {
		return nil, invalid("to has %d people; the limit is %d", len(arr), MaxTo)
	}
	out := make([]string, 0, len(arr))
	for i, r := range arr {
		name := "to[" + strconv.Itoa(i) + "]"
		id, verr := jsonString(r, name)
		if verr != nil {
			return nil, verr
		}
		if verr := checkPersonID(id, name); verr != nil {
			return nil, verr
		}
		for j, prev := range out {
			if prev == id {
				return nil, invalid("%s repeats to[%d] (%q)", name, j, id)
			}
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// checkPersonID: a person id is what a sign-in gives as the person's
// `sub`: 1–MaxPersonID characters, printable, without surrounding spaces.
func checkPersonID(id, name string) *Error {
	switch n := utf8.RuneCountInString(id); {
	case id == "":
		return invalid("%s must not be empty", name)
	case n > MaxPersonID:
		return invalid("%s is %d characters long; a person id has at most %d", name, n, MaxPersonID)
	case strings.TrimSpace(id) != id:
		return invalid("%s has spaces at its start or end", name)
	}
	return checkText(id, name, false)
}
