package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcpfeedback/caddy-mcp-feedback/feedback"
	"github.com/mcpfeedback/caddy-mcp-feedback/internal/validate"
	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// webp1x1 is a 1×1 lossless WebP (no WebP encoder in the standard library).
const webp1x1 = "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="

func encodeImage(t testing.TB, kind string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		img.Set(x, 0, color.RGBA{R: uint8(x), G: 80, B: 200, A: 255})
	}
	var buf bytes.Buffer
	var err error
	switch kind {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func imageJSON(data []byte, mediaType, alt string) string {
	return fmt.Sprintf(`{"data":%q,"mediaType":%q,"alt":%q}`, base64.StdEncoding.EncodeToString(data), mediaType, alt)
}

// polyglotPNG is a real PNG with an HTML page after its end: what an
// attacker would hope a browser sniffs as HTML.
func polyglotPNG(t testing.TB) []byte {
	return append(encodeImage(t, "png", 4, 4), []byte("<html><script>alert(1)</script></html>")...)
}

// TestCreateImagesBadInput: an image is what its bytes are, within the
// limits; anything else is a 400 naming the image and what is wrong.
func TestCreateImagesBadInput(t *testing.T) {
	s := newService(t, store.NewMemory())
	tok := mint(t, "alice")
	pngb := encodeImage(t, "png", 8, 8)
	five := strings.TrimSuffix(strings.Repeat(imageJSON(pngb, "image/png", "")+",", 5), ",")
	big := make([]byte, 1<<20+1)
	copy(big, pngb)
	cases := []struct{ name, images, says string }{
		{"not an array", `{"data":"x"}`, "images must be an array"},
		{"five images", `[` + five + `]`, "images has 5 entries; the limit is 4"},
		{"no data", `[{"mediaType":"image/png"}]`, "images[0].data is required"},
		{"not base64", `[{"data":"***","mediaType":"image/png"}]`, "images[0].data is not valid base64"},
		{"no media type", `[{"data":"` + base64.StdEncoding.EncodeToString(pngb) + `"}]`, "images[0].mediaType is required"},
		{"svg", `[` + imageJSON([]byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), "image/svg+xml", "") + `]`, `images[0].mediaType "image/svg+xml" is not allowed`},
		{"html labelled png", `[` + imageJSON([]byte("<html><script>alert(1)</script>"), "image/png", "") + `]`, "images[0] says image/png, but its bytes are text/html"},
		{"png labelled jpeg", `[` + imageJSON(pngb, "image/jpeg", "") + `]`, "images[0] says image/jpeg, but its bytes are image/png"},
		{"pdf", `[` + imageJSON([]byte("%PDF-1.7\n"), "image/png", "") + `]`, "its bytes are application/pdf"},
		{"truncated png", `[` + imageJSON(pngb[:20], "image/png", "") + `]`, "images[0] is not a readable image/png image"},
		{"too large", `[` + imageJSON(big, "image/png", "") + `]`, "images[0] is 1048577 bytes; the limit is 1048576"},
		{"too wide", `[` + imageJSON(encodeImage(t, "png", 9000, 1), "image/png", "") + `]`, "images[0] is 9000×1 pixels; each side must be from 1 to 8192"},
		{"alt too long", `[` + imageJSON(pngb, "image/png", strings.Repeat("a", 301)) + `]`, "images[0].alt is 301 characters long; the limit is 300"},
		{"alt with newline", `[` + imageJSON(pngb, "image/png", "a\nb") + `]`, "images[0].alt contains the control character"},
		{"unknown member", `[{"data":"","mediaType":"image/png","src":"https://x"}]`, `images[0]: unknown field "src"`},
		{"mcp block of another type", `[{"type":"audio","data":"` + base64.StdEncoding.EncodeToString(pngb) + `","mimeType":"image/png"}]`, `images[0].type may only be "image"`},
		{"both type names", `[{"data":"` + base64.StdEncoding.EncodeToString(pngb) + `","mimeType":"image/png","mediaType":"image/png"}]`, "has both mediaType and mimeType"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := s.do(t, s.Create, call{method: "POST", body: `{"message":"Look","images":` + c.images + `}`, headers: bearer(tok)})
			var eb errorBody
			if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &eb) != nil || !strings.Contains(eb.Error.Message, c.says) {
				t.Fatalf("%d %s, want 400 saying %q", w.Code, w.Body, c.says)
			}
		})
	}
	// max_images off refuses them; max_images 1 allows one.
	for n, says := range map[int]string{0: "this server takes no images (max_images off)", 1: "images has 2 entries; the limit is 1"} {
		lim := validate.DefaultLimits()
		lim.MaxImages = n
		ls := newServiceWith(t, store.NewMemory(), feedback.Config{Limits: lim})
		two := `[` + imageJSON(pngb, "image/png", "") + `,` + imageJSON(pngb, "image/png", "") + `]`
		if w := ls.do(t, ls.Create, call{method: "POST", body: `{"message":"Look","images":` + two + `}`, headers: bearer(tok)}); w.Code != 400 || !strings.Contains(w.Body.String(), says) {
			t.Errorf("max_images %d: %d %s", n, w.Code, w.Body)
		}
	}
	// Only images may make a create larger than 64 KiB.
	w := s.do(t, s.Create, call{method: "POST", body: `{"message":"hi","metadata":{"a":"` + strings.Repeat("x", 70<<10) + `"}}`, headers: bearer(tok)})
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("70 KiB of metadata: %d %s", w.Code, w.Body)
	}
}

// TestImagesServed: the images of a question (each kind, and the largest
// allowed) are stored beside it and served to a holder of its link only,
// with the type found from the bytes, nosniff and a sandboxing CSP; a
// polyglot is served as the image it claims to be.
func TestImagesServed(t *testing.T) {
	s := newService(t, store.NewMemory())
	h := newHumanFor(t, s)
	tok := mint(t, "alice")
	webp, _ := base64.StdEncoding.DecodeString(webp1x1)
	// A PNG of 1 MiB exactly: a small image padded with an ancillary chunk
	// would change nothing here, so pad after IEND (still a readable PNG).
	large := encodeImage(t, "png", 8, 8)
	large = append(large, make([]byte, 1<<20-len(large))...)
	imgs := [][2]string{{"png", "image/png"}, {"jpeg", "image/jpeg"}, {"gif", "image/gif"}}
	var parts []string
	var want [][]byte
	for _, im := range imgs {
		b := encodeImage(t, im[0], 16, 9)
		want = append(want, b)
		parts = append(parts, imageJSON(b, im[1], "a "+im[0]))
	}
	want = append(want, webp)
	parts = append(parts, fmt.Sprintf(`{"type":"image","data":%q,"mimeType":"image/webp"}`, webp1x1))
	id, capTok := create(t, s, tok, `{"message":"Which looks right?","images":[`+strings.Join(parts, ",")+`]}`)
	bigID, bigTok := create(t, s, tok, `{"message":"Big","images":[`+imageJSON(large, "image/png", "")+`]}`)
	polyID, polyTok := create(t, s, tok, `{"message":"Poly","images":[`+imageJSON(polyglotPNG(t), "image/png", "")+`]}`)

	v := view(t, h, id, capTok)
	if len(v.Images) != 4 || v.Images[0].MediaType != "image/png" || v.Images[0].Alt != "a png" || v.Images[0].Width != 16 || v.Images[3].MediaType != "image/webp" || v.Images[3].Width != 1 {
		t.Fatalf("view images %+v", v.Images)
	}
	get := func(id, capTok, n string) *http.Response {
		req := httptest.NewRequest("POST", "https://fb.example/feedback/"+id+"/image/"+n, strings.NewReader(`{"token":"`+capTok+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetPathValue("id", id)
		req.SetPathValue("n", n)
		w := httptest.NewRecorder()
		h.Image(w, req)
		return w.Result()
	}
	for i, b := range want {
		r := get(id, capTok, fmt.Sprint(i))
		body := new(bytes.Buffer)
		_, _ = body.ReadFrom(r.Body)
		if r.StatusCode != 200 || !bytes.Equal(body.Bytes(), b) || r.Header.Get("Content-Type") != v.Images[i].MediaType ||
			r.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(r.Header.Get("Content-Security-Policy"), "sandbox") {
			t.Fatalf("image %d: %d %v (%d bytes)", i, r.StatusCode, r.Header, body.Len())
		}
	}
	if r := get(bigID, bigTok, "0"); r.StatusCode != 200 || r.ContentLength != 1<<20 {
		t.Fatalf("1 MiB image: %d, %d bytes", r.StatusCode, r.ContentLength)
	}
	if r := get(polyID, polyTok, "0"); r.StatusCode != 200 || r.Header.Get("Content-Type") != "image/png" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("polyglot: %d %v", r.StatusCode, r.Header)
	}
	for _, c := range []struct{ name, id, tok, n string }{
		{"wrong token", id, bigTok, "0"}, {"no token", id, "", "0"}, {"past the last", id, capTok, "4"},
		{"negative", id, capTok, "-1"}, {"leading zero", id, capTok, "01"}, {"not a number", id, capTok, "x"},
		{"huge", id, capTok, "99999999999999999999"}, {"question without images", polyID, polyTok, "1"},
	} {
		if r := get(c.id, c.tok, c.n); r.StatusCode != 404 {
			t.Errorf("%s: %d", c.name, r.StatusCode)
		}
	}
	// The bytes are kept apart from the question, which only describes them.
	sess, err := s.core.Get(t.Context(), store.Owner{Subject: "alice"}, id)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(sess); len(b) > 4<<10 {
		t.Fatalf("the question holds %d bytes: the images are in it", len(b))
	}
}
