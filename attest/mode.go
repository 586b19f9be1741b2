package attest

import "bytes"

// IsDev says whether a is the dev attestor, or there is none: everything
// such an instance signs is marked t=dev, and its API says dev: true.
func IsDev(a Attester) bool { return a == nil || a.Mode() == "dev" }

// EventMode is the t tag of what an instance under a signs (its
// announcements, attestation events and backup checkpoints): "dev" for
// the dev attestor (or none); on Nitro "debug" when pcr0, the PCR0 of its
// document, is missing or all zero (a debug enclave), else "prod". It is
// the one place that derives the mode.
func EventMode(a Attester, pcr0 []byte) string {
	if IsDev(a) {
		return "dev"
	}
	if len(pcr0) == 0 || bytes.Equal(pcr0, make([]byte, len(pcr0))) {
		return "debug"
	}
	return "prod"
}
