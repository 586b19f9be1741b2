package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/nip"
)

// signingKeyEnv holds the signer's secret key (hex or nsec) when no
// -key-file is given: a maintainer's for releases and builds, the
// operator's for instance signatures. Never a flag: flags end up in shell
// history and ps.
const signingKeyEnv = "ENCLAVED_SIGNING_KEY"

const releaseUsage = `usage:
  enclaved release sign -version V [-prod] -pcr0 H -pcr1 H -pcr2 H   a release (kind 63794)
  enclaved release sign-build -version V [-prod] -cert FILE          a build (kind 23794, PCR8)
  enclaved release sign-instance -instance-id i-… [-prod]            an instance (kind 23795, PCR4)
  enclaved release verify FILE
Keys come from -key-file or $` + signingKeyEnv + ` (hex or nsec). Each prints the signed event JSON.
`

func runRelease(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, releaseUsage)
		return errors.New("release: want sign, sign-build, sign-instance or verify")
	}
	var evt nostr.Event
	var keyFile *string
	var err error
	switch args[0] {
	case "verify":
		return runReleaseVerify(args[1:], stdout, stderr)
	case "sign":
		evt, keyFile, err = releaseEvent(args[1:], stderr)
	case "sign-build":
		evt, keyFile, err = buildEvent(args[1:], stderr)
	case "sign-instance":
		evt, keyFile, err = instanceEvent(args[1:], stderr)
	default:
		fmt.Fprint(stderr, releaseUsage)
		return fmt.Errorf("release: unknown subcommand %q", args[0])
	}
	if err != nil {
		return fmt.Errorf("release %s: %w", args[0], err)
	}
	sk := lookupEnv(environ, signingKeyEnv)
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("release %s: %w", args[0], err)
		}
		sk = string(b)
	}
	if sk, err = secretKey(strings.TrimSpace(sk)); err != nil {
		return fmt.Errorf("release %s: signing key (-key-file or $%s): %w", args[0], signingKeyEnv, err)
	}
	if err := evt.Sign(sk); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(evt)
}

func modeOf(prod bool) string {
	if prod {
		return "prod"
	}
	return "dev"
}

func releaseEvent(args []string, stderr io.Writer) (nostr.Event, *string, error) {
	fs := newFlagSet("release sign", `Signs a release: kind 63794 with the repo, version and PCR0/1/2 of the
enclave image, for operators to embed in their announcements.`, stderr)
	repo := fs.String("repo", nip.Repo, "repository")
	version := fs.String("version", "", "release version")
	prod := fs.Bool("prod", false, "a production release (t=prod; else t=dev)")
	keyFile := fs.String("key-file", "", "file holding the maintainer's secret key")
	var pcr [3]*string
	for i := range pcr {
		pcr[i] = fs.String(fmt.Sprintf("pcr%d", i), "", fmt.Sprintf("PCR%d, 96 hex characters", i))
	}
	if err := fs.Parse(args); err != nil {
		return nostr.Event{}, nil, err
	}
	if *version == "" {
		return nostr.Event{}, nil, errors.New("-version is required")
	}
	pcrs := map[uint][]byte{}
	for i, p := range pcr {
		b, err := hex.DecodeString(*p)
		if err != nil {
			return nostr.Event{}, nil, fmt.Errorf("-pcr%d is not hex", i)
		}
		pcrs[uint(i)] = b
	}
	evt, err := nip.ReleaseSignature(*repo, *version, modeOf(*prod), pcrs, nostr.Now())
	return evt, keyFile, err
}

func buildEvent(args []string, stderr io.Writer) (nostr.Event, *string, error) {
	fs := newFlagSet("release sign-build", `Signs a build: kind 23794 with the certificate the enclave image (EIF)
was signed with and PCR8, its digest. The certificate must be self-signed
with issuer O=Nostr, CN=<the signer's npub>; verifiers check all of it.`, stderr)
	repo := fs.String("repo", nip.Repo, "repository")
	version := fs.String("version", "", "version built")
	prod := fs.Bool("prod", false, "a production build (t=prod; else t=dev)")
	certFile := fs.String("cert", "", "the EIF signing certificate (PEM)")
	keyFile := fs.String("key-file", "", "file holding the builder's secret key")
	if err := fs.Parse(args); err != nil {
		return nostr.Event{}, nil, err
	}
	if *version == "" || *certFile == "" {
		return nostr.Event{}, nil, errors.New("-version and -cert are required")
	}
	b, err := os.ReadFile(*certFile)
	if err != nil {
		return nostr.Event{}, nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nostr.Event{}, nil, fmt.Errorf("%s: not a PEM certificate", *certFile)
	}
	if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		return nostr.Event{}, nil, fmt.Errorf("%s: %w", *certFile, err)
	}
	certPEM := string(pem.EncodeToMemory(blk))
	return nip.BuildSignature(*repo, *version, modeOf(*prod), certPEM, attest.CertPCR8(blk.Bytes), nostr.Now()), keyFile, nil
}

func instanceEvent(args []string, stderr io.Writer) (nostr.Event, *string, error) {
	fs := newFlagSet("release sign-instance", `Signs an instance: kind 23795 with PCR4, the digest of the EC2 instance
id the enclave runs on, so verifiers know who launched it.`, stderr)
	id := fs.String("instance-id", "", "the EC2 instance id (i-…)")
	prod := fs.Bool("prod", false, "a production instance (t=prod; else t=dev)")
	keyFile := fs.String("key-file", "", "file holding the operator's secret key")
	if err := fs.Parse(args); err != nil {
		return nostr.Event{}, nil, err
	}
	if !strings.HasPrefix(*id, "i-") || strings.ContainsAny(*id, " \t\n") {
		return nostr.Event{}, nil, errors.New("-instance-id must be an EC2 instance id (i-…)")
	}
	return nip.InstanceSignature(attest.PCRDigest([]byte(*id)), modeOf(*prod), nostr.Now()), keyFile, nil
}

// secretKey accepts a hex secret key or an nsec.
func secretKey(s string) (string, error) {
	if strings.HasPrefix(s, "nsec1") {
		prefix, v, err := nip19.Decode(s)
		if err != nil || prefix != "nsec" {
			return "", errors.New("not a valid nsec")
		}
		return v.(string), nil
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
		return "", errors.New("want 64 hex characters or an nsec")
	}
	return s, nil
}

func runReleaseVerify(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return errors.New("release verify: want one file")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return fmt.Errorf("release verify: %w", err)
	}
	var evt nostr.Event
	if err := json.Unmarshal(b, &evt); err != nil {
		return errors.New("release verify: not event JSON")
	}
	what := map[int]string{nip.KindRelease: "release", nip.KindReleaseLegacy: "release",
		nip.KindBuildSignature: "build", nip.KindBuildSignatureLegacy: "build",
		nip.KindInstanceSignature: "instance", nip.KindInstanceSignatureLegacy: "instance"}[evt.Kind]
	ok, _ := evt.CheckSignature()
	switch {
	case what == "":
		return fmt.Errorf("release verify: kind %d is not a release, build or instance signature", evt.Kind)
	case !ok || evt.GetID() != evt.ID:
		return errors.New("release verify: bad signature")
	}
	fmt.Fprintf(stdout, "%s signature (kind %d, t=%s) by %s", what, evt.Kind, nip.TagValue(&evt, "t"), nip.Npub(evt.PubKey))
	if r := nip.TagValue(&evt, "r"); r != "" {
		fmt.Fprintf(stdout, ": %s v%s", r, nip.TagValue(&evt, "v"))
	}
	fmt.Fprintln(stdout)
	for _, t := range evt.Tags {
		switch {
		case len(t) >= 3 && t[0] == "x":
			fmt.Fprintf(stdout, "  %s %s\n", t[2], t[1])
		case len(t) >= 2 && strings.HasPrefix(t[0], "PCR"):
			fmt.Fprintf(stdout, "  %s %s\n", t[0], t[1])
		}
	}
	return nil
}
