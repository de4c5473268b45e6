package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AttachmentTypes are the types a person's attachment may be configured to
// have: the ones whose bytes the standard library's sniffer (the WHATWG
// MIME sniffing algorithm) recognises, so that the type is always proven
// by content. A type it cannot tell apart (an Office document is a ZIP)
// would have to be taken on the uploader's word, so it is not offered.
var AttachmentTypes = []string{"image/png", "image/jpeg", "image/webp", "image/gif", "application/pdf", "text/plain"}

// Attachment limits.
const (
	// MaxAttachmentIDs caps the ids one submit may name (the configured
	// max_files is at most this).
	MaxAttachmentIDs = 20
	// MaxFileNameChars caps a file name as stored.
	MaxFileNameChars = 200
	// MaxAttachmentIDLength caps one id in a submit.
	MaxAttachmentIDLength = 64
)

// CodeTypeNotAllowed is the Error.Code of a file whose type is not on the
// allow-list (HTTP 415), as opposed to one whose bytes disagree with its
// type (400).
const CodeTypeNotAllowed = "unsupported_media_type"

// CheckFile finds a person's file's type from its bytes and checks it
// against the declared type (the browser's, from the file name) and the
// allowed types. It returns the type to store and serve, without
// parameters. The declared type must agree with the bytes, so that a file
// named .png that is really HTML is refused rather than renamed.
func CheckFile(data []byte, declared string, allowed []string) (string, *Error) {
	want, _, err := mime.ParseMediaType(declared)
	if declared == "" || err != nil {
		return "", invalid("the file's type is missing or unreadable (%q); allowed: %s", truncate(declared, 60), strings.Join(allowed, ", "))
	}
	if !slices.Contains(allowed, want) {
		return "", &Error{Code: CodeTypeNotAllowed, Message: fmt.Sprintf("files of type %s are not accepted here; allowed: %s", truncate(want, 60), strings.Join(allowed, ", "))}
	}
	if len(data) == 0 {
		return "", invalid("the file is empty")
	}
	sniffed, _, err := mime.ParseMediaType(http.DetectContentType(data))
	if err != nil {
		return "", invalid("the file's content type could not be determined")
	}
	if sniffed != want {
		return "", invalid("the file says it is %s, but its bytes are %s", want, sniffed)
	}
	switch {
	case want == "text/plain":
		// The sniffer looks at 512 bytes; text must be text to the end.
		if !utf8.Valid(data) {
			return "", invalid("the file says it is text/plain, but it is not UTF-8 text")
		}
	case strings.HasPrefix(want, "image/"):
		cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil || "image/"+format != want {
			return "", invalid("the file is not a readable %s image", want)
		}
		if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > MaxImageSide || cfg.Height > MaxImageSide {
			return "", invalid("the image is %d×%d pixels; each side must be from 1 to %d", cfg.Width, cfg.Height, MaxImageSide)
		}
	}
	return want, nil
}

// CleanFileName is the name a file is kept under: its last path element,
// with control, format and bidirectional characters replaced (they could
// disguise the name, e.g. "gpj.exe" shown as "exe.jpg"), at most
// MaxFileNameChars characters; "file" when nothing is left.
func CleanFileName(name string) string {
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	name = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '"' {
			return '_'
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if n := []rune(name); len(n) > MaxFileNameChars {
		name = string(n[:MaxFileNameChars])
	}
	if name == "" || name == "." || name == "/" || name == ".." {
		return "file"
	}
	return name
}

// decodeAttachmentIDs reads a submit's "attachments": an array of upload
// ids, each at most once.
func decodeAttachmentIDs(raw []byte) ([]string, *Error) {
	var ids []string
	if err := strictUnmarshalStrings(raw, &ids); err != nil {
		return nil, invalid(`attachments must be an array of upload ids (strings), as POST /feedback/{id}/attachments returned them`)
	}
	if len(ids) > MaxAttachmentIDs {
		return nil, invalid("attachments has %d entries; the limit is %d", len(ids), MaxAttachmentIDs)
	}
	seen := map[string]bool{}
	for i, s := range ids {
		if s == "" || len(s) > MaxAttachmentIDLength || strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return nil, invalid("attachments[%d] is not an upload id", i)
		}
		if seen[s] {
			return nil, invalid("attachments[%d] names upload %s a second time", i, s)
		}
		seen[s] = true
	}
	return ids, nil
}

func strictUnmarshalStrings(raw []byte, out *[]string) error {
	if len(raw) == 0 || raw[0] != '[' {
		return fmt.Errorf("not an array")
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return err
	}
	for i, el := range arr {
		s, verr := jsonString(el, fmt.Sprintf("attachments[%d]", i))
		if verr != nil {
			return verr
		}
		*out = append(*out, s)
	}
	return nil
}
