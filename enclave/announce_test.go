package enclave_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hf/nitrite"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
)

// The instance announces itself (kind 13793) in the format explorers read,
// with its attestation in tee_root: a document under the dev root binding
// its key, whose PCRs are the x tags; a full instance says it is closed.
func TestAnnouncement(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL}, "instance.capacity_units=1", "instance.container_egress=api.example.com:443")
	self := inst.key.PublicKey()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ann := testenv.Next(t, testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{13793}, Authors: []string{self}}), "announcement")
	if ok, _ := ann.CheckSignature(); !ok {
		t.Fatal("announcement signature")
	}
	tag := func(e *nostr.Event, name string) string {
		if tg := e.Tags.Find(name); len(tg) > 1 {
			return tg[1]
		}
		return ""
	}
	for name, want := range map[string]string{"r": nip.Repo, "name": "enclaved", "v": "test", "t": "dev", "relay": relay.URL, "o": "true", "alt": "enclaved server"} {
		if got := tag(ann, name); got != want {
			t.Errorf("tag %s = %q, want %q", name, got, want)
		}
	}
	exp, _ := strconv.ParseInt(tag(ann, "expiration"), 10, 64)
	if exp <= inst.clock.Now().Unix() {
		t.Errorf("expiration %d is not in the future", exp)
	}
	var root nostr.Event
	if err := json.Unmarshal([]byte(tag(ann, "tee_root")), &root); err != nil || root.Kind != 23793 || root.PubKey != self || tag(&root, "t") != "dev" {
		t.Fatalf("tee_root %v %+v", err, root)
	}
	doc, _ := base64.StdEncoding.DecodeString(root.Content)
	pool := x509.NewCertPool()
	pool.AddCert(inst.attester.Root())
	res, err := nitrite.Verify(doc, nitrite.VerifyOptions{Roots: pool, CurrentTime: inst.clock.Now()})
	if err != nil || hex.EncodeToString(res.Document.PublicKey) != self {
		t.Fatalf("attestation: %v", err)
	}
	for _, i := range nip.AnnouncedPCRs {
		want := hex.EncodeToString(res.Document.PCRs[i])
		if ann.Tags.FindWithValue("x", want) == nil || want == hex.EncodeToString(make([]byte, 48)) {
			t.Errorf("PCR%d %s missing from the x tags or zero", i, want)
		}
	}
	if tg := ann.Tags.Find("capacity"); len(tg) < 3 || tg[1] != "1" || tg[2] != "1" {
		t.Errorf("capacity tag %v", tg)
	}
	// The egress policy: a dev instance in one process enforces neither
	// its own nor its containers' (the split test checks the enforced
	// one).
	var egress []string
	for _, tg := range ann.Tags {
		if tg[0] == "egress" {
			egress = append(egress, strings.Join(tg, " "))
		}
	}
	if got, want := strings.Join(egress, "; "), "egress instance unenforced; egress containers unconfined api.example.com:443"; got != want {
		t.Errorf("egress tags %q, want %q", got, want)
	}

	// Full: the announcement says closed.
	c := testenv.NewClient(t, relay.URL)
	inst.deploy(t, c, "deploy "+imgs.Hello.Ref+" name=fills", "fills")
	closed, err := inst.in.Announcement(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(closed.Tags.Find("o"), closed.Tags.Find("capacity")); got != "[o false] [capacity 0 1]" {
		t.Errorf("full instance announces %s", got)
	}
}
