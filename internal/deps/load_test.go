package deps

import "testing"

// The load generator is a renter's client like any other: it imports no
// package of this module, so it cannot share a bug with the instance's own
// protocol code, and what it measures is what a renter sees.
func TestLoadGeneratorIsAnOutsideClient(t *testing.T) {
	p, ok := list(t)["cmd/enclaved-load"]
	if !ok {
		t.Fatal("cmd/enclaved-load is gone: update this test")
	}
	if deps := ours(p.Imports); len(deps) > 0 {
		t.Errorf("cmd/enclaved-load imports %v: it must use go-nostr alone", deps)
	}
}
