package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A volume blob that matches its reference but does not decrypt whole (cut
// short after its first 64 KiB chunk) is refused and leaves no part of the
// volume archive for the deployer to load (found by FuzzRestoreVolumes:
// the first 64 KiB were left as ab.tar).
func TestRefusedVolumeLeavesNoArchive(t *testing.T) {
	_, id := newSecrets(t)
	blobs := blobWorld(t)
	blob := encrypt(t, id.Recipient(), bytes.Repeat([]byte("volume "), 20<<10))
	blob = blob[:len(blob)-1]
	sum := sha256.Sum256(blob)
	ref := VolumeRef{ID: "ab", Blob: "vol-ab-a", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(blob))}
	put(t, blobs, ref.Blob, blob)
	volDir := filepath.Join(t.TempDir(), "vol")
	err := restoreVolumes(context.Background(), blobs, id, Manifest{Seq: 1, Volumes: []VolumeRef{ref}}, t.TempDir(), volDir)
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("restore of a cut volume blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(volDir, "ab.tar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused volume blob left ab.tar: %v", err)
	}
}
