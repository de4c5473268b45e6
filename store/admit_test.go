package store_test

import (
	"testing"
	"time"

	"github.com/mcpfeedback/caddy-mcp-feedback/store"
)

// TestAdmit: members up to the limit are admitted; one over it is refused
// and taken back out of the set, so it does not count against later ones.
func TestAdmit(t *testing.T) {
	kv := store.NewMemory()
	defer kv.Close()
	until := time.Now().Add(time.Hour)
	for i, m := range []string{"a", "b", "c"} {
		ok, err := store.Admit(t.Context(), kv, "cap", m, until, 2)
		if err != nil || ok != (i < 2) {
			t.Fatalf("admit %s: %v %v", m, ok, err)
		}
	}
	if ms, _ := kv.Members(t.Context(), "cap"); len(ms) != 2 {
		t.Fatalf("the set holds %v after a refusal", ms)
	}
}
