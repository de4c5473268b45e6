package validate

import "testing"

// BenchmarkDecodeCreate is the create body feedback-bench sends.
//
//	go test -run '^$' -bench DecodeCreate -benchmem ./internal/validate/
func BenchmarkDecodeCreate(b *testing.B) {
	body := []byte(`{"message":"Deploy to production?","predefinedOptions":["yes","no","later"],"timeout":3600,"metadata":{"pr":42}}`)
	lim := DefaultLimits()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, verr := DecodeCreate(body, lim, "theme", "lang"); verr != nil {
			b.Fatal(verr)
		}
	}
}
