package backup_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// A boot never starts empty by itself when state may exist: keys in the key
// store with no checkpoint recorded is a loss case like the others, refused
// until the operator sets backup.accept_loss; the very first boot (no keys,
// no blobs) starts a new instance.
func TestBootRefusesKeysWithoutCheckpoint(t *testing.T) {
	ctx := context.Background()
	ks := testenv.NewKeyStore(t)
	blobs := tunnel.Blobs{Link: testenv.ParentLink(t, &parent.Server{BlobDir: t.TempDir()}, nil)}
	dir := t.TempDir()
	boot := backup.Boot{KeyStore: ks.Client(ks.Attestor("boot-build", "i-0123456789abcdef0")), Blobs: blobs,
		NewKey: func() (string, error) { return nostr.GeneratePrivateKey(), nil },
		DBPath: filepath.Join(dir, "enclaved.db"), VolDir: filepath.Join(dir, "volumes")}

	first, err := boot.Run(ctx)
	if err != nil || !first.Fresh || first.Last != nil {
		t.Fatalf("first boot: %+v, %v", first, err)
	}
	// It stopped before its first backup was recorded.
	_, err = boot.Run(ctx)
	if !errors.Is(err, backup.ErrNeedsAcknowledgement) || !strings.Contains(err.Error(), "keys but no backup checkpoint") {
		t.Fatalf("keys without a checkpoint: %v, want a refusal asking for backup.accept_loss", err)
	}
	boot.AcceptLoss = true
	again, err := boot.Run(ctx)
	if err != nil || again.Fresh || again.Secrets.Pubkey() != first.Secrets.Pubkey() {
		t.Fatalf("with backup.accept_loss: %+v, %v; want the same keys, started empty", again, err)
	}
}
