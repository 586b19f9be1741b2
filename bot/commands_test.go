package bot

import (
	"testing"

	"github.com/enclaved/enclaved/nip"
)

// Every verb of the grammar has a handler, and every handler a verb.
func TestEveryVerbIsAnswered(t *testing.T) {
	for _, v := range nip.Verbs {
		if _, ok := verbs[v]; !ok {
			t.Errorf("no handler for %q", v)
		}
	}
	if len(verbs) != len(nip.Verbs) {
		t.Errorf("%d handlers for %d verbs", len(verbs), len(nip.Verbs))
	}
}
