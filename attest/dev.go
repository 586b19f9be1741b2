// Package attest produces attestation documents that bind the instance key
// to the code that runs: on Nitro the Security Module signs them; in dev
// mode a dev attestor signs documents of the same format (COSE_Sign1, ES384,
// the Nitro CBOR fields) with a local P-384 root, so every verifier path is
// exercised, and every event of a dev instance says t=dev.
//
// It runs inside the enclave. The dev root's key lives in the data dir; it
// proves nothing to anyone but the developer who holds it.
package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nitrite"
)

// Attester produces attestation documents (COSE_Sign1 bytes).
type Attester interface {
	// Attest returns a document whose public_key is publicKey.
	Attest(ctx context.Context, publicKey, userData, nonce []byte) ([]byte, error)
	// Mode is "nitro" or "dev"; it becomes the t tag of the instance's
	// events.
	Mode() string
}

// LeafValidity is how long a dev document's signing certificate lives, as
// on Nitro (about 3 h).
const LeafValidity = 3 * time.Hour

// PCRCount is the number of PCRs in a document, as on Nitro.
const PCRCount = 16

// Dev is the dev attestor.
type Dev struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	pcrs    map[uint][]byte
	now     func() time.Time
}

var _ Attester = (*Dev)(nil)

// Mode is "dev".
func (d *Dev) Mode() string { return "dev" }

// RootPEM is the dev root certificate, for `enclaved verify --dev-root`.
func (d *Dev) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.root.Raw})
}

// Root is the dev root certificate.
func (d *Dev) Root() *x509.Certificate { return d.root }

// PCRs returns the PCR values the dev attestor reports.
func (d *Dev) PCRs() map[uint][]byte { return d.pcrs }

// PCRDigest is Nitro's PCR extension from zero: sha384(zeros48 ‖ data).
// PCR4 is PCRDigest(EC2 instance id); PCR8 is CertPCR8 of the certificate
// the enclave image was signed with.
func PCRDigest(data []byte) []byte {
	h := sha512.New384()
	h.Write(make([]byte, 48))
	h.Write(data)
	return h.Sum(nil)
}

// CertPCR8 is the PCR8 of an enclave image signed with the certificate
// whose DER encoding is der: PCRDigest(sha384(der)).
func CertPCR8(der []byte) []byte {
	fp := sha512.Sum384(der)
	return PCRDigest(fp[:])
}

// DevPCRs derives PCR0/1/2/3/4/8 from the binary's sha384, each under its
// own label (never all zero); the others stay zero, as on Nitro.
func DevPCRs(binaryHash []byte) map[uint][]byte {
	pcrs := map[uint][]byte{}
	for i := uint(0); i < PCRCount; i++ {
		pcrs[i] = make([]byte, 48)
	}
	for _, i := range []uint{0, 1, 2, 3, 4, 8} {
		pcrs[i] = PCRDigest(append([]byte(fmt.Sprintf("enclaved dev PCR%d:", i)), binaryHash...))
	}
	return pcrs
}

// Simulate makes the dev attestor report the PCRs Nitro reports for an
// enclave launched on the EC2 instance instanceID (PCR4) from an image
// signed with the certificate whose DER is signingCert (PCR8), so build
// and instance signatures can be tried in dev. Empty arguments keep the
// derived values. Call it before the first Attest.
func (d *Dev) Simulate(instanceID string, signingCert []byte) {
	if instanceID != "" {
		d.pcrs[4] = PCRDigest([]byte(instanceID))
	}
	if len(signingCert) > 0 {
		d.pcrs[8] = CertPCR8(signingCert)
	}
}

// SimulateDebug makes the dev attestor report what Nitro reports for an
// enclave launched in debug mode: every PCR zero. Call it before the
// first Attest.
func (d *Dev) SimulateDebug() {
	for i := range d.pcrs {
		d.pcrs[i] = make([]byte, 48)
	}
}

// BinaryHash is the sha384 of the running executable.
func BinaryHash() ([]byte, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(exe)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha512.New384()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// LoadOrCreateDev loads the dev root from dir (dev-root.pem and
// dev-root.key, mode 0600), creating it on first use, and reports PCRs
// derived from binaryHash. now is the clock.
func LoadOrCreateDev(dir string, binaryHash []byte, now func() time.Time) (*Dev, error) {
	certPath, keyPath := filepath.Join(dir, "dev-root.pem"), filepath.Join(dir, "dev-root.key")
	d := &Dev{pcrs: DevPCRs(binaryHash), now: now}
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, os.ErrNotExist) {
		if err := d.createRoot(certPath, keyPath); err != nil {
			return nil, fmt.Errorf("dev attestation root: %w", err)
		}
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dev attestation root: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("dev attestation root key: %w", err)
	}
	cb, kb := decodePEM(certPEM), decodePEM(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("dev attestation root: not PEM")
	}
	if d.root, err = x509.ParseCertificate(cb); err != nil {
		return nil, fmt.Errorf("dev attestation root: %w", err)
	}
	if d.rootKey, err = x509.ParseECPrivateKey(kb); err != nil {
		return nil, fmt.Errorf("dev attestation root key: %w", err)
	}
	return d, nil
}

func decodePEM(b []byte) []byte {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil
	}
	return blk.Bytes
}

func (d *Dev) createRoot(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return err
	}
	now := d.now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{Organization: []string{"enclaved dev"}, CommonName: "enclaved dev attestation root"},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(30 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		SignatureAlgorithm: x509.ECDSAWithSHA384,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	d.rootKey = key
	d.root, err = x509.ParseCertificate(der)
	return err
}

// Attest signs a document with a fresh leaf certificate (valid
// LeafValidity) under the dev root.
func (d *Dev) Attest(_ context.Context, publicKey, userData, nonce []byte) ([]byte, error) {
	for name, b := range map[string][]byte{"public_key": publicKey, "user_data": userData, "nonce": nonce} {
		if len(b) > 1024 {
			return nil, fmt.Errorf("attest: %s longer than 1024 bytes", name)
		}
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := d.now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{Organization: []string{"enclaved dev"}, CommonName: "enclaved dev enclave"},
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(LeafValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, SignatureAlgorithm: x509.ECDSAWithSHA384,
	}
	leaf, err := x509.CreateCertificate(rand.Reader, tmpl, d.root, &leafKey.PublicKey, d.rootKey)
	if err != nil {
		return nil, err
	}
	payload, err := cbor.Marshal(nitrite.Document{
		ModuleID: "enclaved-dev", Timestamp: uint64(now.UnixMilli()), Digest: "SHA384", PCRs: d.pcrs,
		Certificate: leaf, CABundle: [][]byte{d.root.Raw},
		PublicKey: publicKey, UserData: userData, Nonce: nonce,
	})
	if err != nil {
		return nil, err
	}
	return signCOSE(payload, leafKey)
}

// coseSign1 is the COSE_Sign1 array; Sig_structure is signed.
type coseSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected map[int]any
	Payload     []byte
	Signature   []byte
}

type sigStructure struct {
	_           struct{} `cbor:",toarray"`
	Context     string
	Protected   []byte
	ExternalAAD []byte
	Payload     []byte
}

// signCOSE wraps payload in a COSE_Sign1 signed with ES384 (alg -35), as the
// Nitro Security Module does.
func signCOSE(payload []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	protected, err := cbor.Marshal(map[int]int{1: -35})
	if err != nil {
		return nil, err
	}
	tbs, err := cbor.Marshal(sigStructure{Context: "Signature1", Protected: protected, ExternalAAD: []byte{}, Payload: payload})
	if err != nil {
		return nil, err
	}
	digest := sha512.Sum384(tbs)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 96)
	r.FillBytes(sig[:48])
	s.FillBytes(sig[48:])
	return cbor.Marshal(coseSign1{Protected: protected, Unprotected: map[int]any{}, Payload: payload, Signature: sig})
}
