package validate

import "encoding/json"

// AppArgs are the arguments of the MCP Apps view's tools: which question,
// the capability token that proves the person holds it, and for an answer
// the answer itself, still raw: it is decoded (DecodeSubmit) only after
// the token has been checked, so that a caller without the token learns
// nothing from validation errors.
type AppArgs struct {
	SessionID string
	Token     string
	Answer    json.RawMessage
}

// maxTokenChars bounds a token before it is compared; real ones are 26.
const maxTokenChars = 256

// DecodeAppArgs parses {"sessionId","token"} (and "answer" when
// withAnswer) with the same strictness as every other body.
func DecodeAppArgs(body []byte, withAnswer bool) (*AppArgs, *Error) {
	allowed := []string{"sessionId", "token"}
	if withAnswer {
		allowed = append(allowed, "answer")
	}
	fields, verr := decodeObject(body, allowed)
	if verr != nil {
		return nil, verr
	}
	raw, ok := fields["sessionId"]
	if !ok || isNull(raw) {
		return nil, invalid("sessionId is required: the id of the question the view shows")
	}
	id, verr := jsonString(raw, "sessionId")
	if verr != nil {
		return nil, verr
	}
	raw, ok = fields["token"]
	if !ok || isNull(raw) {
		return nil, invalid("token is required: the question's capability token, which the view received with the tool result")
	}
	tok, verr := jsonString(raw, "token")
	if verr != nil {
		return nil, verr
	}
	if tok == "" {
		return nil, invalid("token is empty: send the question's capability token")
	}
	if len(tok) > maxTokenChars {
		return nil, invalid("token is longer than %d characters, so it cannot be a capability token", maxTokenChars)
	}
	args := &AppArgs{SessionID: id, Token: tok}
	if withAnswer {
		raw, ok := fields["answer"]
		if !ok || isNull(raw) {
			return nil, invalid(`answer is required: {"selectedOptions":[…],"freeText":"…","nonce":"…"}`)
		}
		if raw[0] != '{' {
			return nil, invalid("answer must be a JSON object")
		}
		args.Answer = raw
	}
	return args, nil
}
