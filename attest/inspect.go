package attest

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nitrite"
)

// MaxDocument bounds the attestation documents this package reads (Nitro's
// are about 4.5 KB; the NSM's response is at most 12 KB).
const MaxDocument = 16 << 10

// Inspect reads an attestation document without verifying it: its fields
// and when its signing certificate expires. Verification is nitrite's job
// (see Verify in the verify package); this is for the instance's own
// documents, to publish their PCRs and expiry.
func Inspect(doc []byte) (nitrite.Document, time.Time, error) {
	if len(doc) > MaxDocument {
		return nitrite.Document{}, time.Time{}, fmt.Errorf("attestation document of %d bytes (at most %d)", len(doc), MaxDocument)
	}
	var c coseSign1Raw
	if err := cbor.Unmarshal(doc, &c); err != nil {
		return nitrite.Document{}, time.Time{}, errors.New("attestation document is not a COSE_Sign1 array")
	}
	var d nitrite.Document
	if err := cbor.Unmarshal(c.Payload, &d); err != nil {
		return nitrite.Document{}, time.Time{}, errors.New("attestation document payload is not the Nitro CBOR map")
	}
	cert, err := x509.ParseCertificate(d.Certificate)
	if err != nil {
		return d, time.Time{}, fmt.Errorf("attestation document certificate: %w", err)
	}
	return d, cert.NotAfter, nil
}

type coseSign1Raw struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected cbor.RawMessage
	Payload     []byte
	Signature   []byte
}
