package enclave

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// parseSigned parses a signed event of one of kinds.
func parseSigned(b []byte, kinds ...int) (nostr.Event, error) {
	e, err := nip.ParseSigned(b, kinds...)
	if err != nil {
		return nostr.Event{}, err
	}
	return *e, nil
}

// UseSignatures takes the build, instance and release signatures the
// parent supplies (JSON events), for an instance whose configuration names
// none. The parent is untrusted: each is checked (kind, signature, and
// that it signs this instance's own attested PCRs: PCR8, PCR4, PCR0-2)
// and the ones that fail are skipped, with the reasons returned; at most
// MaxParentReleases releases are looked at. Call it before Run.
func (in *Instance) UseSignatures(ctx context.Context, build, launch string, releases []string) []error {
	if build == "" && launch == "" && len(releases) == 0 {
		return nil
	}
	if in.parts.Attester == nil {
		return []error{errors.New("signatures from the parent: no attestation to check them against")}
	}
	if _, err := in.teeRoot(ctx); err != nil {
		return []error{fmt.Errorf("signatures from the parent: %w", err)}
	}
	in.mu.Lock()
	pcrs := in.rootDoc.PCRs
	in.mu.Unlock()
	signs := func(e *nostr.Event, i uint) error {
		if len(pcrs[i]) != 48 {
			return fmt.Errorf("this instance's attestation has no PCR%d", i)
		}
		if !nip.SignsPCR(e, i, pcrs[i]) {
			return fmt.Errorf("it does not sign this instance's PCR%d (%.16s…)", i, hex.EncodeToString(pcrs[i]))
		}
		return nil
	}
	var errs []error
	if build != "" && in.build.ID == "" {
		e, err := parseSigned([]byte(build), nip.KindBuildSignature, nip.KindBuildSignatureLegacy)
		if err == nil {
			err = signs(&e, 8)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("build signature: %w", err))
		} else {
			in.build = e
		}
	}
	if launch != "" && in.launch.ID == "" {
		e, err := parseSigned([]byte(launch), nip.KindInstanceSignature, nip.KindInstanceSignatureLegacy)
		if err == nil {
			err = signs(&e, 4)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("instance signature: %w", err))
		} else {
			in.launch = e
		}
	}
	if len(in.releases) == 0 {
		if len(releases) > MaxParentReleases {
			errs = append(errs, fmt.Errorf("%d releases; only the first %d are looked at", len(releases), MaxParentReleases))
			releases = releases[:MaxParentReleases]
		}
		for i, r := range releases {
			e, err := parseSigned([]byte(r), nip.KindRelease)
			for _, pcr := range nip.ReleasePCRs {
				if err == nil {
					err = signs(&e, pcr)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("release %d: %w", i+1, err))
			} else {
				in.releases = append(in.releases, e)
			}
		}
	}
	return errs
}

// MaxParentReleases bounds the release signatures taken from the parent.
const MaxParentReleases = 16

// loadSigned reads a signed event of one of kinds from path (the file named
// by config key).
func loadSigned(key, path string, kinds ...int) (nostr.Event, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nostr.Event{}, fmt.Errorf("%s: %w", key, err)
	}
	evt, err := parseSigned(b, kinds...)
	if err != nil {
		return evt, fmt.Errorf("%s: %s: %w", key, path, err)
	}
	return evt, nil
}
