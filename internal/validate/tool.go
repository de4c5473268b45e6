package validate

import (
	"encoding/json"
	"time"
)

// SessionArgs are the arguments of the MCP tools that act on one session.
type SessionArgs struct {
	SessionID string
	// Wait is how long to wait for the session to change; nil: don't wait.
	Wait *time.Duration
}

// DecodeSessionArgs parses {"sessionId": "...", "wait": <seconds>} with the
// same strictness as a create body. wait is accepted only when maxWait > 0,
// and must then be a whole number of seconds from 0 to maxWait.
func DecodeSessionArgs(body []byte, maxWait time.Duration) (*SessionArgs, *Error) {
	allowed := []string{"sessionId"}
	if maxWait > 0 {
		allowed = append(allowed, "wait")
	}
	fields, verr := decodeObject(body, allowed)
	if verr != nil {
		return nil, verr
	}
	raw, ok := fields["sessionId"]
	if !ok || isNull(raw) {
		return nil, invalid("sessionId is required: the id interactive_feedback returned")
	}
	id, verr := jsonString(raw, "sessionId")
	if verr != nil {
		return nil, verr
	}
	args := &SessionArgs{SessionID: id}
	if raw, ok := fields["wait"]; ok && !isNull(raw) {
		lim := Limits{MinTimeout: 0, MaxTimeout: maxWait}
		d, verr := decodeSeconds(raw, "wait", lim)
		if verr != nil {
			return nil, verr
		}
		args.Wait = &d
	}
	return args, nil
}

// Bool decodes an optional boolean member returned as an extra field by
// DecodeCreate; a missing or null member is false.
func Bool(raw json.RawMessage, name string) (bool, *Error) {
	if len(raw) == 0 || isNull(raw) {
		return false, nil
	}
	return jsonBool(raw, name)
}
