package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/verify"
)

// checkTimeout bounds the fetch of the announcement before a deploy.
const checkTimeout = 10 * time.Second

// checkInstance is `enclaved dm`'s verify-before-you-pay: before a deploy
// it fetches the instance's newest announcement from relays, verifies it
// (verify.Announcement, at the time of the fetch) and prints what it
// verified: what the attestation shows the instance is (prod, debug or
// dev), its PCR0/1/2 and who signed the release. A dev or debug instance,
// a failing check or no announcement at all gets a loud WARNING line. It
// never stops the deploy: the renter reads the quote and decides whether
// to pay. devRoot (PEM, optional) is a dev instance's root, to tell a dev
// instance from a forgery. It returns the report (zero if nothing was
// found).
func checkInstance(ctx context.Context, pool *nostr.SimplePool, relays []string, pubkey string, devRoot []byte, w io.Writer) verify.Report {
	fmt.Fprintln(w, "checking the instance before the deploy (verify before you pay):")
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var evt *nostr.Event
	f := nostr.Filter{Kinds: []int{nip.KindAnnouncement, verify.KindLegacyAnnouncement}, Authors: []string{pubkey}}
	for re := range pool.FetchMany(ctx, relays, f) {
		if evt == nil || re.Event.CreatedAt > evt.CreatedAt {
			evt = re.Event
		}
	}
	if evt == nil {
		fmt.Fprintf(w, "WARNING: no announcement of %s on %s: nothing is verified. Do not pay before it can be verified.\n",
			nip.Npub(pubkey), strings.Join(relays, ", "))
		return verify.Report{}
	}
	r := verify.Announcement(evt, verify.Options{DevRoot: devRoot, AllowDev: true, AllowDebug: true})
	fmt.Fprintf(w, "  announcement: kind %d by %s, t=%s, of %s\n", evt.Kind, nip.Npub(evt.PubKey), r.Mode,
		evt.CreatedAt.Time().UTC().Format(time.RFC3339))
	switch r.Enclave() {
	case "prod":
		fmt.Fprintln(w, "  attestation: prod, a Nitro enclave (chained to the AWS Nitro root G1)")
	case "debug":
		fmt.Fprintln(w, "  attestation: debug, a Nitro debug enclave (chained to the AWS Nitro root G1, PCR0/1/2 all zero)")
	case "dev":
		fmt.Fprintln(w, "  attestation: dev, chained to a dev root, not to AWS Nitro")
	default:
		fmt.Fprintln(w, "  attestation: not verified")
	}
	if d := r.Document; d != nil {
		for _, i := range nip.ReleasePCRs {
			fmt.Fprintf(w, "  PCR%d %s\n", i, hex.EncodeToString(d.PCRs[i]))
		}
	}
	var signers []string
	for _, t := range evt.Tags {
		if len(t) < 2 || t[0] != "release" {
			continue
		}
		if rel, err := nip.ParseSigned([]byte(t[1]), nip.KindRelease, nip.KindReleaseLegacy); err == nil {
			signers = append(signers, fmt.Sprintf("%s (v%s)", nip.Npub(rel.PubKey), nip.TagValue(rel, "v")))
		}
	}
	if len(signers) == 0 {
		signers = []string{"none"}
	}
	fmt.Fprintf(w, "  release signers: %s\n", strings.Join(signers, ", "))
	failed := 0
	for _, c := range r.Checks {
		if !c.OK {
			failed++
			fmt.Fprintf(w, "  FAIL  %s: %s\n", c.Name, c.Detail)
		}
	}
	if failed == 0 {
		fmt.Fprintf(w, "  all %d checks passed (enclaved verify %s lists them)\n", len(r.Checks), nip.Npub(pubkey))
	}
	for _, warning := range r.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", warning)
	}
	switch {
	case failed > 0:
		fmt.Fprintf(w, "WARNING: %d check(s) FAILED: this instance is not shown to be what it claims. Do not pay it.\n", failed)
	case r.Enclave() == "dev":
		fmt.Fprintln(w, "WARNING: a DEV instance: no enclave protects it; whoever runs it can read and change everything in it. Pay only what you would give away.")
	case r.Enclave() == "debug":
		fmt.Fprintln(w, "WARNING: a DEBUG enclave: its host can read its memory. Pay only what you would give away.")
	}
	return r
}

// readDevRoot reads the dev root file named by -dev-root; unnamed, the
// data dir's dev-root.pem if there is one (that of a dev instance run from
// the same data dir).
func readDevRoot(flagValue, dataDir string) ([]byte, error) {
	if flagValue != "" {
		b, err := os.ReadFile(flagValue)
		if err != nil {
			return nil, fmt.Errorf("dm: -dev-root: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-root.pem"))
	if err != nil {
		return nil, nil
	}
	return b, nil
}
