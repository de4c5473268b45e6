package ui

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// BenchmarkPageWeight renders the shell and reports what a first visit
// downloads: the HTML, CSS and JS, raw and gzipped (as Caddy's `encode
// gzip` would send them).
//
//	go test -run '^$' -bench PageWeight ./ui/
func BenchmarkPageWeight(b *testing.B) {
	d := PageData{Lang: En, SessionID: "123e4567-e89b-12d3-a456-426614174000", StaticBase: "../feedback-static/"}
	var page bytes.Buffer
	for b.Loop() {
		page.Reset()
		if err := RenderPage(&page, d); err != nil {
			b.Fatal(err)
		}
	}
	css, _ := LookupAsset("page.css")
	js, _ := LookupAsset("page.js")
	formJS, _ := LookupAsset("form.js")
	total, gz := 0, 0
	for _, body := range [][]byte{page.Bytes(), css.Body, js.Body, formJS.Body} {
		total += len(body)
		gz += gzipLen(b, body)
	}
	b.ReportMetric(float64(page.Len()), "html-bytes")
	b.ReportMetric(float64(len(css.Body)), "css-bytes")
	b.ReportMetric(float64(len(js.Body)+len(formJS.Body)), "js-bytes")
	b.ReportMetric(float64(total), "total-bytes")
	b.ReportMetric(float64(gz), "total-gzip-bytes")
}

func gzipLen(b *testing.B, p []byte) int {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(p); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Len()
}
