package validate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	// The decoders image.DecodeConfig needs to read each allowed type's
	// header: dimensions, and proof that the bytes are that type.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"
	"net/http"
	"slices"
	"unicode/utf8"

	_ "golang.org/x/image/webp"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// Image limits. A question's images are shown to the person as they are;
// these bound what an asker can make a browser fetch and decode.
// MaxImages is the ceiling of the configurable Limits.MaxImages.
const (
	MaxImages     = 4
	MaxImageBytes = 1 << 20 // decoded; the KV value limit too
	MaxImageSide  = 8192    // pixels, either side
	MaxAltChars   = 300
)

// ImageTypes are the media types an image may have, as sniffed from its
// bytes (the declared type must agree).
var ImageTypes = []string{"image/png", "image/jpeg", "image/webp", "image/gif"}

// Image is one decoded, checked image of a create.
type Image struct {
	Ref  store.ImageRef
	Data []byte
}

func decodeImages(raw json.RawMessage, maxImages int) ([]Image, *Error) {
	shape := `images must be an array of {"data":"<base64>","mediaType":"image/png","alt":"…"} objects`
	if raw[0] != '[' {
		return nil, invalid("%s", shape)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return nil, invalid("%s", shape)
	}
	if maxImages <= 0 && len(arr) > 0 {
		return nil, invalid("this server takes no images (max_images off)")
	}
	if len(arr) > maxImages {
		return nil, invalid("images has %d entries; the limit is %d", len(arr), maxImages)
	}
	out := make([]Image, 0, len(arr))
	for i, el := range arr {
		im, verr := decodeImage(el, fmt.Sprintf("images[%d]", i))
		if verr != nil {
			return nil, verr
		}
		out = append(out, im)
	}
	return out, nil
}

func decodeImage(raw json.RawMessage, at string) (Image, *Error) {
	var im Image
	if raw[0] != '{' {
		return im, invalid(`%s must be an object {"data","mediaType","alt"}`, at)
	}
	// An MCP image content block ({"type":"image","data","mimeType"}) is
	// accepted as it is, so that an agent can pass one on.
	fields, verr := decodeObject(raw, []string{"data", "mediaType", "alt", "type", "mimeType"})
	if verr != nil {
		return im, &Error{Code: verr.Code, Message: at + ": " + verr.Message}
	}
	if traw, ok := fields["type"]; ok {
		if t, verr := jsonString(traw, at+".type"); verr != nil || t != "image" {
			return im, invalid(`%s.type may only be "image" (an MCP image content block)`, at)
		}
	}
	if mt, ok := fields["mimeType"]; ok {
		if _, both := fields["mediaType"]; both {
			return im, invalid("%s has both mediaType and mimeType; give one", at)
		}
		fields["mediaType"] = mt
	}
	draw, ok := fields["data"]
	if !ok || isNull(draw) {
		return im, invalid("%s.data is required: the image's bytes in base64", at)
	}
	b64, verr := jsonString(draw, at+".data")
	if verr != nil {
		return im, verr
	}
	if base64.StdEncoding.DecodedLen(len(b64)) > MaxImageBytes+3 {
		return im, invalid("%s is larger than %d bytes", at, MaxImageBytes)
	}
	data, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return im, invalid("%s.data is not valid base64 (standard alphabet, with padding): %v", at, err)
	}
	if len(data) > MaxImageBytes {
		return im, invalid("%s is %d bytes; the limit is %d", at, len(data), MaxImageBytes)
	}
	mraw, ok := fields["mediaType"]
	if !ok || isNull(mraw) {
		return im, invalid("%s.mediaType is required: one of image/png, image/jpeg, image/webp, image/gif", at)
	}
	declared, verr := jsonString(mraw, at+".mediaType")
	if verr != nil {
		return im, verr
	}
	if !slices.Contains(ImageTypes, declared) {
		return im, invalid("%s.mediaType %q is not allowed; use image/png, image/jpeg, image/webp or image/gif", at, truncate(declared, 40))
	}
	// The type is what the bytes are, never what the asker says: a file
	// that is not one of the allowed images is refused, whatever its label.
	sniffed := http.DetectContentType(data)
	if sniffed != declared {
		return im, invalid("%s says %s, but its bytes are %s", at, declared, sniffed)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil || "image/"+format != sniffed {
		return im, invalid("%s is not a readable %s image", at, declared)
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > MaxImageSide || cfg.Height > MaxImageSide {
		return im, invalid("%s is %d×%d pixels; each side must be from 1 to %d", at, cfg.Width, cfg.Height, MaxImageSide)
	}
	if araw, ok := fields["alt"]; ok && !isNull(araw) {
		if im.Ref.Alt, verr = jsonString(araw, at+".alt"); verr != nil {
			return im, verr
		}
		if n := utf8.RuneCountInString(im.Ref.Alt); n > MaxAltChars {
			return im, invalid("%s.alt is %d characters long; the limit is %d", at, n, MaxAltChars)
		}
		if verr := checkText(im.Ref.Alt, at+".alt", false); verr != nil {
			return im, verr
		}
	}
	im.Ref.MediaType, im.Ref.Bytes, im.Ref.Width, im.Ref.Height = sniffed, len(data), cfg.Width, cfg.Height
	im.Data = data
	return im, nil
}

// MaxCreateBytes bounds a create body with images: MaxBodyBytes for the
// rest, and each image in base64 (4/3 of its bytes) with room for its
// JSON. NonImageBytes keeps everything but the images to MaxBodyBytes.
const MaxCreateBytes = MaxBodyBytes + MaxImages*(MaxImageBytes/3*4+1024)

// NonImageBytes is how large body is without its top-level "images"
// member: what must stay within MaxBodyBytes. A body that cannot be read
// as an object counts whole.
func NonImageBytes(body []byte) int {
	if len(body) <= MaxBodyBytes {
		return len(body)
	}
	fields, verr := decodeObject(body, nil)
	if verr != nil {
		return len(body)
	}
	return len(body) - len(fields["images"])
}
