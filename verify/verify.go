// Package verify checks what an instance claims about itself: its
// announcement (kind 13793, or the legacy kind 63793) with the Nitro
// attestation in it, and a container's status (kind 63797) through its
// certificate chain up to that attestation. Each check is reported pass or
// fail by name; the verdict passes only if every required check does.
//
// It runs outside the instance's enclave (clients, explorers, `enclaved
// verify`) and in the key store's enclave, which checks the attestation
// documents of the enclaves asking for their keys with Document
// (keystore.DocumentVerifier). It treats every input as hostile.
package verify

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hf/nitrite"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/nip"
)

// Event kinds read here.
const (
	KindLegacyAnnouncement = 63793
)

// Options say what to trust and when.
type Options struct {
	// At is the time to verify at (default: now).
	At time.Time
	// DevRoot, if set, is a dev attestation root (PEM); documents chained
	// to it pass the chain check only with AllowDev.
	DevRoot    []byte
	AllowDev   bool
	AllowDebug bool
	// Maintainers (hex pubkeys) and Threshold: at least Threshold of them
	// must have signed a release (kind 63794) whose PCR0/1/2 are the
	// attested ones. No maintainers: release signatures are not required,
	// but any embedded one must match.
	Maintainers []string
	Threshold   int
}

// Check is one named check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Report is the outcome of a verification.
type Report struct {
	Kind   int    `json:"kind"`
	Pubkey string `json:"pubkey"`
	// Mode is the t tag: upstream's release channel (prod or dev; ours
	// also says debug). It is a label: whether the instance is a real
	// enclave is decided by the attestation chain alone (Enclave).
	Mode   string  `json:"mode,omitempty"`
	Checks []Check `json:"checks"`
	OK     bool    `json:"ok"`
	// Warnings are facts a user should know that fail no check (a real
	// enclave running a release labelled dev).
	Warnings []string `json:"warnings,omitempty"`
	// DevRoot and Debug say what the verified document is: chained to a
	// dev root rather than AWS's; a debug enclave (PCR0/1/2 all zero).
	DevRoot bool `json:"dev_root,omitempty"`
	Debug   bool `json:"debug,omitempty"`
	// Document is the verified attestation (nil if it did not parse).
	Document *nitrite.Document `json:"-"`
}

// Enclave says what the attestation shows: "prod" (a Nitro enclave, chained
// to the AWS root), "debug" (the same, but a debug enclave whose memory its
// host can read), "dev" (chained to a dev root: no enclave at all), or ""
// when no document verified.
func (r Report) Enclave() string {
	switch {
	case r.Document == nil:
		return ""
	case r.DevRoot:
		return "dev"
	case r.Debug:
		return "debug"
	}
	return "prod"
}

func (r *Report) add(name string, ok bool, format string, args ...any) bool {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	return ok
}

func (r *Report) done() Report {
	r.OK = len(r.Checks) > 0
	for _, c := range r.Checks {
		r.OK = r.OK && c.OK
	}
	return *r
}

// Announcement verifies an instance announcement: its signature, its
// attestation (chain, public_key, freshness, PCRs) and that the x tags are
// the attested PCRs.
func Announcement(evt *nostr.Event, opt Options) Report {
	r := &Report{Kind: evt.Kind, Pubkey: evt.PubKey, Mode: nip.TagValue(evt, "t")}
	if opt.At.IsZero() {
		opt.At = time.Now()
	}
	ok, _ := evt.CheckSignature()
	r.add("event signature", ok && evt.GetID() == evt.ID, "kind %d by %s", evt.Kind, nip.Npub(evt.PubKey))
	var doc []byte
	switch evt.Kind {
	case nip.KindAnnouncement:
		root, err := embedded(nip.TagValue(evt, "tee_root"), nip.KindTEERoot, evt.PubKey)
		if !r.add("tee_root", err == nil, "%s", errText(err, "kind 23793 signed by the instance")) {
			return r.done()
		}
		if doc, err = base64.StdEncoding.DecodeString(root.Content); err != nil {
			r.add("attestation document", false, "tee_root content is not base64")
			return r.done()
		}
		if exp, err := strconv.ParseInt(nip.TagValue(root, "expiration"), 10, 64); err == nil {
			r.add("tee_root fresh", opt.At.Unix() < exp, "expires %s", time.Unix(exp, 0).UTC().Format(time.RFC3339))
		}
	case KindLegacyAnnouncement:
		var err error
		if doc, err = base64.StdEncoding.DecodeString(strings.TrimSpace(evt.Content)); err != nil {
			r.add("attestation document", false, "content is not base64")
			return r.done()
		}
	default:
		r.add("kind", false, "kind %d is not an announcement (13793 or 63793)", evt.Kind)
		return r.done()
	}
	if exp, err := strconv.ParseInt(nip.TagValue(evt, "expiration"), 10, 64); err == nil {
		r.add("announcement fresh", opt.At.Unix() < exp, "expires %s", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	} else {
		r.add("announcement fresh", false, "no expiration tag")
	}
	d := r.document(doc, opt)
	if d == nil {
		return r.done()
	}
	r.add("public_key", hex.EncodeToString(d.PublicKey) == evt.PubKey, "document binds %s", shortHex(d.PublicKey))
	r.releaseChannel()
	// x tags: each PCRn announced must be the attested one.
	n, bad := 0, []string{}
	for _, t := range evt.Tags {
		if len(t) < 3 || t[0] != "x" || !strings.HasPrefix(t[2], "PCR") {
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(t[2], "PCR"))
		n++
		if err != nil || i < 0 || hex.EncodeToString(d.PCRs[uint(i)]) != t[1] {
			bad = append(bad, t[2])
		}
	}
	r.add("PCRs match x tags", n > 0 && len(bad) == 0, "%d x tags, mismatched: %v", n, bad)
	if raw := nip.TagValue(evt, "instance"); raw != "" {
		r.instanceSignature(raw, d)
	}
	if raw := nip.TagValue(evt, "build"); raw != "" {
		r.buildSignature(raw, d, opt)
	}
	r.releases(evt, d, opt)
	return r.done()
}

// signature parses an embedded build or instance signature of one of
// kinds, checking its own signature.
func signature(raw string, kinds ...int) (*nostr.Event, error) {
	if len(raw) > 64<<10 {
		return nil, errors.New("too long")
	}
	return nip.ParseSigned([]byte(raw), kinds...)
}

// instanceSignature checks the launcher's signature of PCR4, the digest
// of the EC2 instance the enclave runs on.
func (r *Report) instanceSignature(raw string, d *nitrite.Document) {
	const name = "instance signature (PCR4)"
	e, err := signature(raw, nip.KindInstanceSignature, nip.KindInstanceSignatureLegacy)
	if err != nil {
		r.add(name, false, "%v", err)
		return
	}
	got := nip.TagValue(e, "PCR4")
	r.add(name, got != "" && got == hex.EncodeToString(d.PCRs[4]), "launcher %s signed PCR4 %s; attested %s",
		nip.Npub(e.PubKey), shortString(got), shortHex(d.PCRs[4]))
}

// buildSignature checks the builder's signature of PCR8: the attested
// PCR8 must be the one signed, and the digest of the certificate in the
// signature (sha384(zeros48 ‖ sha384(cert DER))), a self-signed
// certificate of O=Nostr whose CN (or OU) is the builder's npub.
func (r *Report) buildSignature(raw string, d *nitrite.Document, opt Options) {
	const name = "build signature (PCR8)"
	e, err := signature(raw, nip.KindBuildSignature, nip.KindBuildSignatureLegacy)
	if err != nil {
		r.add(name, false, "%v", err)
		return
	}
	attested := hex.EncodeToString(d.PCRs[8])
	if got := nip.TagValue(e, "PCR8"); got == "" || got != attested {
		r.add(name, false, "builder %s signed PCR8 %s; attested %s", nip.Npub(e.PubKey), shortString(got), shortString(attested))
		return
	}
	cert, err := builderCert(nip.TagValue(e, "cert"))
	if err != nil {
		r.add(name, false, "builder certificate: %v", err)
		return
	}
	if !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		r.add(name, false, "builder certificate is not self-signed")
		return
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		r.add(name, false, "builder certificate signature: %v", err)
		return
	}
	if opt.At.Before(cert.NotBefore) || opt.At.After(cert.NotAfter) {
		r.add(name, false, "builder certificate valid %s to %s, not at %s", cert.NotBefore.UTC().Format(time.RFC3339),
			cert.NotAfter.UTC().Format(time.RFC3339), opt.At.UTC().Format(time.RFC3339))
		return
	}
	npub := nip.Npub(e.PubKey)
	if !slices.Contains(cert.Issuer.Organization, "Nostr") || (cert.Issuer.CommonName != npub && !slices.Contains(cert.Issuer.OrganizationalUnit, npub)) {
		r.add(name, false, "builder certificate issuer %q is not O=Nostr, CN=%s", cert.Issuer.String(), npub)
		return
	}
	if pcr8 := hex.EncodeToString(attest.CertPCR8(cert.Raw)); pcr8 != attested {
		r.add(name, false, "builder certificate digest %s is not PCR8 %s", shortString(pcr8), shortString(attested))
		return
	}
	r.add(name, true, "builder %s: certificate %s", npub, cert.Issuer.String())
}

// builderCert parses a certificate given as PEM or as bare base64 DER.
func builderCert(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("missing")
	}
	var der []byte
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		der = blk.Bytes
	} else {
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, errors.New("neither PEM nor base64")
		}
		der = b
	}
	return x509.ParseCertificate(der)
}

// releaseChannel reads t as upstream means it, the release channel: a
// document chained to the AWS root under t=dev is a real enclave running a
// release not labelled for production, which passes with a warning (a dev
// root is the chain's business: "dev instance allowed").
func (r *Report) releaseChannel() {
	switch {
	case r.Mode == "dev" && !r.DevRoot:
		r.Warnings = append(r.Warnings, "t=dev: a real Nitro enclave, but not a production release (its publisher labels the build dev)")
	case r.DevRoot && r.Mode != "dev":
		r.Warnings = append(r.Warnings, fmt.Sprintf("labelled t=%s, but attested by a dev root: no enclave protects it", r.Mode))
	}
}

// releases checks every embedded release signature against the attested
// PCR0/1/2, and the maintainer policy.
func (r *Report) releases(evt *nostr.Event, d *nitrite.Document, opt Options) {
	signed := map[string]bool{}
	for _, t := range evt.Tags {
		if len(t) < 2 || t[0] != "release" {
			continue
		}
		rel, err := signature(t[1], nip.KindRelease, nip.KindReleaseLegacy)
		if err != nil {
			r.add("release signature", false, "embedded release: %v", err)
			continue
		}
		var bad []string
		for _, i := range nip.ReleasePCRs {
			if !nip.SignsPCR(rel, i, d.PCRs[i]) {
				bad = append(bad, fmt.Sprintf("PCR%d", i))
			}
		}
		if r.add("release signature", len(bad) == 0, "%s v%s by %s; mismatched: %v", nip.TagValue(rel, "r"), nip.TagValue(rel, "v"), nip.Npub(rel.PubKey), bad) {
			signed[rel.PubKey] = true
		}
	}
	if len(opt.Maintainers) == 0 {
		return
	}
	n := 0
	for _, m := range opt.Maintainers {
		if signed[m] {
			n++
		}
	}
	threshold := max(opt.Threshold, 1)
	r.add("maintainer policy", n >= threshold, "%d of %d maintainers signed this release, %d required", n, len(opt.Maintainers), threshold)
}

// Document verifies a bare attestation document (chain and PCRs only).
func Document(doc []byte, opt Options) Report {
	r := &Report{}
	if opt.At.IsZero() {
		opt.At = time.Now()
	}
	r.document(doc, opt)
	return r.done()
}

// chain verifies doc's signature and certificate chain to the AWS root
// or, if one is given, to the dev root: a document chains to one root or
// the other, so a real enclave is one whatever it says of itself. The dev
// root, if given, is tried first (it is what a dev instance's document
// chains to, and the AWS root's failure costs a whole verification); dev
// says which root the result is of, detail what passed.
func chain(doc []byte, opt Options) (res *nitrite.Result, detail string, dev bool, err error) {
	at := opt.At.UTC().Format(time.RFC3339)
	aws := func() (*nitrite.Result, error) {
		return nitrite.Verify(doc, nitrite.VerifyOptions{CurrentTime: opt.At})
	}
	if len(opt.DevRoot) == 0 {
		res, err = aws()
		return res, "COSE ES384 signature, chain to AWS Nitro root G1 at " + at, false, err
	}
	blk, _ := pem.Decode(opt.DevRoot)
	if blk == nil {
		return nil, "", true, errors.New("the dev root is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, "", true, fmt.Errorf("the dev root: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	res, err = nitrite.Verify(doc, nitrite.VerifyOptions{Roots: pool, CurrentTime: opt.At})
	if err == nil && res != nil && res.SignatureOK {
		return res, "COSE ES384 signature, chain to the dev root at " + at, true, nil
	}
	if ares, aerr := aws(); aerr == nil && ares != nil && ares.SignatureOK {
		return ares, "COSE ES384 signature, chain to AWS Nitro root G1 at " + at, false, nil
	} else if err != nil {
		err = fmt.Errorf("AWS Nitro root G1: %s; the dev root: %w", errText(aerr, "signature"), err)
	}
	return res, "COSE ES384 signature, chain to the dev root at " + at, true, err
}

// document runs the document checks and returns the document if its chain
// verified.
func (r *Report) document(doc []byte, opt Options) *nitrite.Document {
	if len(doc) > attest.MaxDocument {
		r.add("attestation chain", false, "document of %d bytes", len(doc))
		return nil
	}
	res, detail, dev, err := chain(doc, opt)
	if err != nil && !dev && r.Mode == "dev" {
		err = fmt.Errorf("%w (t=dev: a development instance is attested by its developer's dev root: -dev-root FILE -allow-dev)", err)
	}
	// nitrite can return a result with an error (an expired chain): any
	// error is a failure.
	if !r.add("attestation chain", err == nil && res != nil && res.SignatureOK, "%s", errText(err, detail)) {
		return nil
	}
	r.DevRoot = dev
	if dev {
		r.add("dev instance allowed", opt.AllowDev, "chained to a dev root: for development only (--allow-dev)")
	}
	zero := true
	for _, i := range []uint{0, 1, 2} {
		if p := res.Document.PCRs[i]; !bytes.Equal(p, make([]byte, len(p))) {
			zero = false
		}
	}
	r.Debug = zero
	switch {
	case zero && opt.AllowDebug:
		r.add("not a debug enclave", true, "a debug enclave (PCR0/1/2 all zero), accepted by --allow-debug")
	case zero:
		r.add("not a debug enclave", false, "PCR0/1/2 are all zero: a debug enclave whose memory the host can read (--allow-debug)")
	default:
		r.add("not a debug enclave", true, "PCR0 %s", shortHex(res.Document.PCRs[0]))
	}
	r.Document = res.Document
	return r.Document
}

// Container verifies a container's status (kind 63797): its signature, the
// instance's certificate for its key (kind 23797), and the instance's
// attestation in tee_root.
func Container(evt *nostr.Event, opt Options) Report {
	r := &Report{Kind: evt.Kind, Pubkey: evt.PubKey, Mode: nip.TagValue(evt, "t")}
	if opt.At.IsZero() {
		opt.At = time.Now()
	}
	ok, _ := evt.CheckSignature()
	r.add("event signature", ok && evt.Kind == nip.KindContainerStatus, "kind %d by %s", evt.Kind, nip.Npub(evt.PubKey))
	instance := ""
	for _, t := range evt.Tags {
		if len(t) >= 3 && t[0] == "p" && t[2] == "enclaved" {
			instance = t[1]
		}
	}
	cert, err := embedded(nip.TagValue(evt, "tee_cert"), nip.KindContainerCert, instance)
	if !r.add("tee_cert", err == nil, "%s", errText(err, "kind 23797 signed by the instance "+nip.Npub(instance))) {
		return r.done()
	}
	subject := false
	for _, t := range cert.Tags {
		if len(t) >= 3 && t[0] == "p" && t[1] == evt.PubKey && t[2] == "container" {
			subject = true
		}
	}
	r.add("certificate subject", subject, "the certificate names this container's key")
	exp, err := strconv.ParseInt(nip.TagValue(cert, "expiration"), 10, 64)
	r.add("certificate fresh", err == nil && opt.At.Unix() < exp, "expires %s", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	root, err := embedded(nip.TagValue(evt, "tee_root"), nip.KindTEERoot, instance)
	if !r.add("tee_root", err == nil, "%s", errText(err, "kind 23793 signed by the instance")) {
		return r.done()
	}
	doc, err := base64.StdEncoding.DecodeString(root.Content)
	if err != nil {
		r.add("attestation document", false, "tee_root content is not base64")
		return r.done()
	}
	if d := r.document(doc, opt); d != nil {
		r.add("public_key", hex.EncodeToString(d.PublicKey) == instance, "document binds the instance key")
		r.releaseChannel()
	}
	return r.done()
}

// embedded parses an event embedded as JSON in a tag, of the given kind and
// signed by signer.
func embedded(raw string, kind int, signer string) (*nostr.Event, error) {
	if raw == "" {
		return nil, errors.New("missing")
	}
	e, err := signature(raw, kind)
	if err != nil {
		return nil, err
	}
	if e.PubKey != signer {
		return nil, fmt.Errorf("signed by %s, not %s", nip.Npub(e.PubKey), nip.Npub(signer))
	}
	return e, nil
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func shortHex(b []byte) string { return shortString(hex.EncodeToString(b)) }

func shortString(s string) string {
	if s == "" {
		return "(none)"
	}
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}
