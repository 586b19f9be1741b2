package verify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/nip"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

type devInstance struct {
	sk, pk string
	dev    *attest.Dev
	root   nostr.Event
	doc    []byte
}

func newDevInstance(t testing.TB) devInstance { return newSimulated(t, "", nil) }

// newSimulated is a dev instance launched on EC2 instance id from an image
// signed with the certificate signingCert (DER), as the dev attestor
// simulates them.
func newSimulated(t testing.TB, id string, signingCert []byte) devInstance {
	t.Helper()
	d, err := attest.LoadOrCreateDev(t.TempDir(), bytes.Repeat([]byte{3}, 48), func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	d.Simulate(id, signingCert)
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	pub, _ := hex.DecodeString(pk)
	doc, err := d.Attest(context.Background(), pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	root := nip.TEERoot(doc, "dev", t0.Add(attest.LeafValidity), nostr.Timestamp(t0.Unix()))
	root.Sign(sk)
	return devInstance{sk: sk, pk: pk, dev: d, root: root, doc: doc}
}

func (i devInstance) announcement(t testing.TB, edit func(*nip.Announcement)) *nostr.Event {
	t.Helper()
	rootJSON, _ := json.Marshal(i.root)
	a := nip.Announcement{Name: "enclaved", Version: "test", Mode: "dev", InboxRelay: "ws://127.0.0.1:7447", Open: true,
		Expires: t0.Add(attest.LeafValidity), TEERoot: string(rootJSON), PCRs: i.dev.PCRs()}
	if edit != nil {
		edit(&a)
	}
	evt := nip.AnnouncementEvent(a, nostr.Timestamp(t0.Unix()))
	evt.Sign(i.sk)
	return &evt
}

func failed(r Report) []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

// A dev instance's announcement passes with its dev root; each single
// tamper fails, naming the check.
func TestAnnouncementAndTampers(t *testing.T) {
	inst := newDevInstance(t)
	opt := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	if r := Announcement(inst.announcement(t, nil), opt); !r.OK {
		t.Fatalf("a valid announcement failed: %v", failed(r))
	}

	other := newDevInstance(t)
	for name, tc := range map[string]struct {
		evt  func() *nostr.Event
		opt  Options
		want string
	}{
		"another key signs": {func() *nostr.Event {
			e := inst.announcement(t, nil)
			e.Sign(other.sk)
			return e
		}, opt, "tee_root"},
		"another key's attestation": {func() *nostr.Event {
			e := other.announcement(t, func(a *nip.Announcement) {
				rj, _ := json.Marshal(inst.root)
				a.TEERoot = string(rj)
			})
			return e
		}, opt, "tee_root"},
		"one PCR changed": {func() *nostr.Event {
			return inst.announcement(t, func(a *nip.Announcement) {
				pcrs := map[uint][]byte{}
				for k, v := range a.PCRs {
					pcrs[k] = v
				}
				pcrs[2] = bytes.Repeat([]byte{9}, 48)
				a.PCRs = pcrs
			})
		}, opt, "PCRs match x tags"},
		"expired document": {func() *nostr.Event { return inst.announcement(t, nil) },
			Options{At: t0.Add(attest.LeafValidity + time.Hour), DevRoot: inst.dev.RootPEM(), AllowDev: true}, "attestation chain"},
		"foreign chain": {func() *nostr.Event { return inst.announcement(t, nil) },
			Options{At: t0.Add(time.Minute), DevRoot: other.dev.RootPEM(), AllowDev: true}, "attestation chain"},
		"AWS root for a dev document": {func() *nostr.Event { return inst.announcement(t, nil) },
			Options{At: t0.Add(time.Minute)}, "attestation chain"},
		"dev without --allow-dev": {func() *nostr.Event { return inst.announcement(t, nil) },
			Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM()}, "dev instance allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			r := Announcement(tc.evt(), tc.opt)
			if r.OK || !strings.Contains(strings.Join(failed(r), ","), tc.want) {
				t.Errorf("failed checks %v, want %q among them", failed(r), tc.want)
			}
		})
	}
}

// A container's status verifies through its certificate and tee_root.
func TestContainerChain(t *testing.T) {
	inst := newDevInstance(t)
	csk := nostr.GeneratePrivateKey()
	cpk, _ := nostr.GetPublicKey(csk)
	cert := nip.ContainerCert(cpk, "registry.example/app@sha256:00", t0.Add(24*time.Hour), nostr.Timestamp(t0.Unix()))
	cert.Sign(inst.sk)
	cj, _ := json.Marshal(cert)
	rj, _ := json.Marshal(inst.root)
	status := nip.ContainerStatus(nip.Status{Instance: inst.pk, TEERoot: string(rj), TEECert: string(cj), State: "running", BalanceSats: 10,
		Image: "registry.example/app@sha256:00", App: cpk}, nostr.Timestamp(t0.Unix()))
	status.Sign(csk)
	opt := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	if r := Container(&status, opt); !r.OK {
		t.Fatalf("valid container status failed: %v", failed(r))
	}
	// Signed by another key than the certificate names.
	status.Sign(nostr.GeneratePrivateKey())
	if r := Container(&status, opt); r.OK || !strings.Contains(strings.Join(failed(r), ","), "certificate subject") {
		t.Errorf("another key: %v", failed(r))
	}
}

// The real debug-enclave document verifies at its own time against the AWS
// root, is refused as a debug enclave unless allowed, and fails with one
// byte flipped.
func TestRealNitroDocument(t *testing.T) {
	b64, err := os.ReadFile("testdata/debug-enclave-2022.b64")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b64)))
	at := time.Unix(1658860752, 0)
	if r := Document(doc, Options{At: at}); r.OK || strings.Join(failed(r), ",") != "not a debug enclave" {
		t.Errorf("debug document: failed %v, want only the debug check", failed(r))
	}
	if r := Document(doc, Options{At: at, AllowDebug: true}); !r.OK {
		t.Errorf("with --allow-debug: %v", failed(r))
	}
	if r := Document(doc, Options{At: time.Now(), AllowDebug: true}); r.OK {
		t.Error("the 2022 document verified today")
	}
	bad := bytes.Clone(doc)
	bad[len(bad)-10] ^= 1
	if r := Document(bad, Options{At: at, AllowDebug: true}); r.OK || failed(r)[0] != "attestation chain" {
		t.Errorf("flipped byte: %v", failed(r))
	}
}

// t is upstream's release channel: a real Nitro document (chained to the
// AWS root) in an announcement labelled t=dev, as upstream's instances
// publish, fails on no label; it passes the chain and gets a warning that
// it is not a production release. (The 2022 document binds no public key,
// so only public_key fails; it is a debug enclave, accepted here.)
func TestRealEnclaveLabelledDev(t *testing.T) {
	b64, err := os.ReadFile("testdata/debug-enclave-2022.b64")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b64)))
	at := time.Unix(1658860752, 0)
	d := Document(doc, Options{At: at, AllowDebug: true}).Document
	sk := nostr.GeneratePrivateKey()
	root := nip.TEERoot(doc, "dev", at.Add(time.Hour), nostr.Timestamp(at.Unix()))
	root.Sign(sk)
	rj, _ := json.Marshal(root)
	evt := nip.AnnouncementEvent(nip.Announcement{Name: "enclaved", Version: "0.1.3", Mode: "dev", InboxRelay: "wss://relay.enclaved.org",
		Expires: at.Add(time.Hour), TEERoot: string(rj), PCRs: d.PCRs}, nostr.Timestamp(at.Unix()))
	evt.Sign(sk)
	other := newDevInstance(t)
	for name, opt := range map[string]Options{
		"AWS root":                  {At: at, AllowDebug: true},
		"a dev root given as well":  {At: at, AllowDebug: true, DevRoot: other.dev.RootPEM()},
		"a dev root and -allow-dev": {At: at, AllowDebug: true, DevRoot: other.dev.RootPEM(), AllowDev: true},
	} {
		r := Announcement(&evt, opt)
		if got := strings.Join(failed(r), ","); got != "public_key" {
			t.Errorf("%s: failed %q, want only public_key", name, got)
		}
		if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "not a production release") {
			t.Errorf("%s: warnings %q", name, r.Warnings)
		}
		if r.Mode != "dev" || r.Enclave() != "debug" || r.DevRoot {
			t.Errorf("%s: mode %s, enclave %s, dev root %v", name, r.Mode, r.Enclave(), r.DevRoot)
		}
	}
}

// A dev document fails without its dev root (saying where to find one),
// fails with it unless -allow-dev, whatever its label; a dev root under a
// t=prod label is a warning too.
func TestDevRootDecidesNotTheLabel(t *testing.T) {
	inst := newDevInstance(t)
	at := t0.Add(time.Minute)
	r := Announcement(inst.announcement(t, nil), Options{At: at})
	if r.OK || len(r.Checks) == 0 || !strings.Contains(r.Checks[len(r.Checks)-1].Detail, "-dev-root FILE") {
		t.Errorf("dev instance without its root: %+v", r.Checks)
	}
	prod := inst.announcement(t, func(a *nip.Announcement) { a.Mode = "prod" })
	if r := Announcement(prod, Options{At: at, DevRoot: inst.dev.RootPEM()}); r.OK || strings.Join(failed(r), ",") != "dev instance allowed" {
		t.Errorf("t=prod under a dev root: failed %v", failed(r))
	}
	r = Announcement(prod, Options{At: at, DevRoot: inst.dev.RootPEM(), AllowDev: true})
	if !r.OK || r.Enclave() != "dev" || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "labelled t=prod, but attested by a dev root") {
		t.Errorf("t=prod under a dev root, allowed: ok %v, enclave %s, warnings %q", r.OK, r.Enclave(), r.Warnings)
	}
}

func FuzzAnnouncement(f *testing.F) {
	inst := newDevInstance(f)
	b, _ := json.Marshal(inst.announcement(f, nil))
	f.Add(b)
	f.Add([]byte(`{"kind":13793,"tags":[["tee_root","{}"]]}`))
	f.Add([]byte(`{"kind":63793,"content":"hEShATgi"}`))
	opt := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e nostr.Event
		if json.Unmarshal(data, &e) != nil {
			return
		}
		Announcement(&e, opt)
		Container(&e, opt)
	})
}

func FuzzDocument(f *testing.F) {
	inst := newDevInstance(f)
	f.Add(inst.doc)
	f.Add([]byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22})
	opt := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	f.Fuzz(func(t *testing.T, doc []byte) {
		// Never a panic; a pass needs a document signed under the root.
		if r := Document(doc, opt); r.OK && r.Document == nil {
			t.Fatal("passed without a verified document")
		}
		attest.Inspect(doc)
	})
}

func BenchmarkVerifyAnnouncement(b *testing.B) {
	inst := newDevInstance(b)
	evt := inst.announcement(b, nil)
	opt := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	for b.Loop() {
		if r := Announcement(evt, opt); !r.OK {
			b.Fatal(failed(r))
		}
	}
}

// Release signatures: each embedded one must match the attested PCR0/1/2;
// the maintainer policy counts the valid ones.
func TestReleasesAndMaintainerPolicy(t *testing.T) {
	inst := newDevInstance(t)
	m1, m2 := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	p1, _ := nostr.GetPublicKey(m1)
	p2, _ := nostr.GetPublicKey(m2)
	release := func(sk string, pcrs map[uint][]byte) nostr.Event {
		e, err := nip.ReleaseSignature(nip.Repo, "1.0.0", "dev", pcrs, nostr.Timestamp(t0.Unix()))
		if err != nil {
			t.Fatal(err)
		}
		e.Sign(sk)
		return e
	}
	good := release(m1, inst.dev.PCRs())
	wrong := map[uint][]byte{}
	for k, v := range inst.dev.PCRs() {
		wrong[k] = v
	}
	wrong[1] = bytes.Repeat([]byte{5}, 48)
	base := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	with := func(rels ...nostr.Event) *nostr.Event {
		return inst.announcement(t, func(a *nip.Announcement) { a.Releases = rels })
	}
	for name, tc := range map[string]struct {
		evt         *nostr.Event
		maintainers []string
		threshold   int
		fail        string
	}{
		"signed by the one maintainer": {with(good), []string{p1}, 1, ""},
		"1 of 2 when 2 are required":   {with(good), []string{p1, p2}, 2, "maintainer policy"},
		"no release at all":            {with(), []string{p1}, 1, "maintainer policy"},
		"a release of other PCRs":      {with(good, release(m2, wrong)), []string{p1, p2}, 1, "release signature"},
		"signed by a stranger":         {with(release(m2, inst.dev.PCRs())), []string{p1}, 1, "maintainer policy"},
	} {
		t.Run(name, func(t *testing.T) {
			opt := base
			opt.Maintainers, opt.Threshold = tc.maintainers, tc.threshold
			r := Announcement(tc.evt, opt)
			got := strings.Join(failed(r), ",")
			if (tc.fail == "" && !r.OK) || (tc.fail != "" && !strings.Contains(got, tc.fail)) {
				t.Errorf("failed checks %q, want %q", got, tc.fail)
			}
		})
	}
}

// makeBuilderCert makes a self-signed certificate as builders sign enclave
// images with: issuer O=org, CN=cn.
func makeBuilderCert(t *testing.T, org, cn string) (der []byte, pemText string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	name := pkix.Name{Organization: []string{org}, CommonName: cn}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, Issuer: name,
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour)}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// Build (PCR8) and instance (PCR4) signatures, in the current kinds and
// the legacy ones, and in the legacy announcement (kind 63793 with the
// document in its content); each single tamper fails its check.
func TestBuildAndInstanceSignatures(t *testing.T) {
	builder, launcher := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	bpk, _ := nostr.GetPublicKey(builder)
	lpk, _ := nostr.GetPublicKey(launcher)
	const ec2 = "i-0123456789abcdef0"
	der, certPEM := makeBuilderCert(t, "Nostr", nip.Npub(bpk))
	inst := newSimulated(t, ec2, der)
	now := nostr.Timestamp(t0.Unix())
	build := func(kind int, certText string, pcr8 []byte) string {
		e := nip.BuildSignature(nip.Repo, "1.0.0", "dev", certText, pcr8, now)
		e.Kind = kind
		e.Sign(builder)
		return e.String()
	}
	instance := func(kind int, id string) string {
		e := nip.InstanceSignature(attest.PCRDigest([]byte(id)), "dev", now)
		e.Kind = kind
		e.Sign(launcher)
		return e.String()
	}
	with := func(b, i string) *nostr.Event {
		return inst.announcement(t, func(a *nip.Announcement) {
			a.Build, a.BuildPubkey, a.Instance, a.InstancePubkey = b, bpk, i, lpk
		})
	}
	opt := Options{At: t0.Add(time.Minute), DevRoot: inst.dev.RootPEM(), AllowDev: true}
	pcr8 := attest.CertPCR8(der)

	good := with(build(nip.KindBuildSignature, certPEM, pcr8), instance(nip.KindInstanceSignature, ec2))
	r := Announcement(good, opt)
	if !r.OK {
		t.Fatalf("valid signatures failed: %+v", r.Checks)
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "build signature (PCR8)") || !strings.Contains(got, "instance signature (PCR4)") {
		t.Errorf("checks %s lack the build and instance signatures", got)
	}
	legacy := with(build(nip.KindBuildSignatureLegacy, strings.Join(strings.Split(certPEM, "\n")[1:len(strings.Split(certPEM, "\n"))-2], "\n"), pcr8),
		instance(nip.KindInstanceSignatureLegacy, ec2))
	if r := Announcement(legacy, opt); !r.OK {
		t.Errorf("legacy signature kinds (bare base64 certificate): %v", failed(r))
	}
	// The legacy announcement: kind 63793, the document in content.
	old := *legacy
	old.Kind, old.Content = KindLegacyAnnouncement, base64.StdEncoding.EncodeToString(inst.doc)
	old.Tags = slicesDeleteTag(old.Tags, "tee_root")
	old.Sign(inst.sk)
	if r := Announcement(&old, opt); !r.OK {
		t.Errorf("legacy announcement: %v", failed(r))
	}

	_, strangerPEM := makeBuilderCert(t, "Nostr", nip.Npub(bpk))
	otherDer, _ := makeBuilderCert(t, "Nostr", nip.Npub(lpk))
	_, wrongOrg := makeBuilderCert(t, "Acme", nip.Npub(bpk))
	for name, tc := range map[string]struct {
		evt  *nostr.Event
		want string
	}{
		"instance signed for another EC2 instance": {with(build(nip.KindBuildSignature, certPEM, pcr8), instance(nip.KindInstanceSignature, "i-0aaaaaaaaaaaaaaaa")), "instance signature (PCR4)"},
		"build of another PCR8":                    {with(build(nip.KindBuildSignature, certPEM, attest.CertPCR8(otherDer)), instance(nip.KindInstanceSignature, ec2)), "build signature (PCR8)"},
		"certificate that is not the image's":      {with(build(nip.KindBuildSignature, strangerPEM, pcr8), instance(nip.KindInstanceSignature, ec2)), "build signature (PCR8)"},
		"certificate not O=Nostr":                  {with(build(nip.KindBuildSignature, wrongOrg, pcr8), instance(nip.KindInstanceSignature, ec2)), "build signature (PCR8)"},
		"build signature of the wrong kind":        {with(build(nip.KindRelease, certPEM, pcr8), instance(nip.KindInstanceSignature, ec2)), "build signature (PCR8)"},
	} {
		t.Run(name, func(t *testing.T) {
			r := Announcement(tc.evt, opt)
			if r.OK || !strings.Contains(strings.Join(failed(r), ","), tc.want) {
				t.Errorf("failed checks %v, want %q", failed(r), tc.want)
			}
		})
	}
	// The certificate must name the builder: the same certificate under
	// the launcher's signature fails.
	e := nip.BuildSignature(nip.Repo, "1.0.0", "dev", certPEM, pcr8, now)
	e.Sign(launcher)
	if r := Announcement(with(e.String(), instance(nip.KindInstanceSignature, ec2)), opt); r.OK {
		t.Error("a build signature by a key the certificate does not name passed")
	}
}

func slicesDeleteTag(tags nostr.Tags, name string) nostr.Tags {
	var out nostr.Tags
	for _, t := range tags {
		if len(t) > 0 && t[0] != name {
			out = append(out, t)
		}
	}
	return out
}

// FuzzEmbedded drives the parsers of embedded events and builder
// certificates alone: the whole-announcement fuzzers spend most of each
// run in P-384 signature checks.
func FuzzEmbedded(f *testing.F) {
	inst := newDevInstance(f)
	rj, _ := json.Marshal(inst.root)
	f.Add(string(rj))
	f.Add(`{"kind":23794,"tags":[["cert","MIIB"],["PCR8","00"]]}`)
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f.Fuzz(func(t *testing.T, raw string) {
		if e, err := embedded(raw, nip.KindTEERoot, inst.pk); err == nil && e.PubKey != inst.pk {
			t.Fatal("embedded event accepted from another signer")
		}
		if e, err := signature(raw, nip.KindBuildSignature); err == nil && e.Kind != nip.KindBuildSignature {
			t.Fatal("signature of another kind accepted")
		}
		builderCert(raw)
	})
}
