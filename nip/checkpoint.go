package nip

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/nbd-wtf/go-nostr"
)

// KindCheckpoint is a backup checkpoint (replaceable): the instance key
// states the sequence number, hash and size of its newest backup, so that
// a restore can refuse an older or altered one. Its created_at grows with
// its seq, so relays keep the newest.
const KindCheckpoint = 13795

// Checkpoint is what a checkpoint event states.
type Checkpoint struct {
	Instance string // hex pubkey of the instance that signed it
	Seq      uint64 // 1 for the first backup, then one more each time
	SHA256   string // hex digest of the encrypted blob
	Size     int64  // bytes of the encrypted blob
	Blob     string // the blob's name at the parent
	Event    *nostr.Event
}

// CheckpointEvent builds the unsigned checkpoint event.
func CheckpointEvent(c Checkpoint, mode string, at nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindCheckpoint, CreatedAt: at, Tags: nostr.Tags{
		{"seq", strconv.FormatUint(c.Seq, 10)}, {"x", c.SHA256}, {"size", strconv.FormatInt(c.Size, 10)},
		{"blob", c.Blob}, {"t", mode}, {"alt", "enclaved backup checkpoint"},
	}}
}

// ParseCheckpoint checks a checkpoint event's kind, signature and tags.
func ParseCheckpoint(e *nostr.Event) (Checkpoint, error) {
	if e == nil {
		return Checkpoint{}, errors.New("checkpoint: no event")
	}
	if e.Kind != KindCheckpoint {
		return Checkpoint{}, fmt.Errorf("checkpoint: kind %d, want %d", e.Kind, KindCheckpoint)
	}
	if ok, _ := e.CheckSignature(); !ok || e.GetID() != e.ID {
		return Checkpoint{}, errors.New("checkpoint: bad signature")
	}
	seq, err := strconv.ParseUint(TagValue(e, "seq"), 10, 64)
	if err != nil || seq == 0 {
		return Checkpoint{}, errors.New("checkpoint: seq is not a positive number")
	}
	size, err := strconv.ParseInt(TagValue(e, "size"), 10, 64)
	if err != nil || size <= 0 {
		return Checkpoint{}, errors.New("checkpoint: size is not a positive number")
	}
	x := TagValue(e, "x")
	if b, err := hex.DecodeString(x); err != nil || len(b) != 32 {
		return Checkpoint{}, errors.New("checkpoint: x is not a sha256 hex digest")
	}
	blob := TagValue(e, "blob")
	if blob == "" || len(blob) > 128 {
		return Checkpoint{}, errors.New("checkpoint: no blob name")
	}
	return Checkpoint{Instance: e.PubKey, Seq: seq, SHA256: x, Size: size, Blob: blob, Event: e}, nil
}
