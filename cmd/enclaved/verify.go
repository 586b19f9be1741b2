package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/verify"
)

// errVerifyFailed is returned when a required check fails (exit status 1).
var errVerifyFailed = errors.New("verification failed")

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", `Verifies an instance announcement (kind 13793, or the legacy 63793), a
container status (kind 63797), or a bare attestation document:

  enclaved verify [flags] <npub | nevent | naddr | file>

A file holds the event JSON or a base64 attestation document. With an npub
the newest announcement is fetched from the relays. Whether the instance is
a real enclave is decided by its attestation chain alone: t is a release
channel (prod or dev), and a real enclave labelled t=dev passes with a
warning. Exit status 0 only if every required check passes.`, stderr)
	var relays setFlags
	fs.Var(&relays, "relay", "relay to fetch from; repeatable")
	at := fs.Int64("at", 0, "verify at this unix time (default: now)")
	devRoot := fs.String("dev-root", "", "PEM file of a dev attestation root (dev instances), tried after the AWS root")
	allowDev := fs.Bool("allow-dev", false, "accept documents chained to --dev-root")
	allowDebug := fs.Bool("allow-debug", false, "accept debug enclaves (PCR0/1/2 all zero)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var maintainers setFlags
	fs.Var(&maintainers, "maintainer", "npub of a maintainer whose release signature counts; repeatable")
	threshold := fs.Int("threshold", 1, "how many of the -maintainer keys must have signed the release")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("verify: want one npub, nevent, naddr or file")
	}
	opt := verify.Options{AllowDev: *allowDev, AllowDebug: *allowDebug, Threshold: *threshold}
	for _, m := range maintainers {
		prefix, v, err := nip19.Decode(m)
		if err != nil || prefix != "npub" {
			return fmt.Errorf("verify: -maintainer %q is not an npub", m)
		}
		opt.Maintainers = append(opt.Maintainers, v.(string))
	}
	if *threshold > len(opt.Maintainers) && len(opt.Maintainers) > 0 {
		return fmt.Errorf("verify: -threshold %d exceeds the %d maintainers given", *threshold, len(opt.Maintainers))
	}
	if *at != 0 {
		opt.At = time.Unix(*at, 0)
	}
	if *devRoot != "" {
		b, err := os.ReadFile(*devRoot)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		opt.DevRoot = b
	}
	evt, doc, err := verifyInput(ctx, fs.Arg(0), relays)
	if err != nil {
		return err
	}
	var r verify.Report
	switch {
	case doc != nil:
		r = verify.Document(doc, opt)
	case evt.Kind == nip.KindContainerStatus:
		r = verify.Container(evt, opt)
	default:
		r = verify.Announcement(evt, opt)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		if r.Pubkey != "" {
			fmt.Fprintf(stdout, "kind %d by %s (t=%s)\n", r.Kind, nip.Npub(r.Pubkey), r.Mode)
		}
		for _, c := range r.Checks {
			mark := "pass"
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(stdout, "%s  %-22s %s\n", mark, c.Name, c.Detail)
		}
		for _, w := range r.Warnings {
			fmt.Fprintf(stdout, "WARNING: %s\n", w)
		}
		if r.OK {
			fmt.Fprintln(stdout, "verified")
		}
	}
	if !r.OK {
		return errVerifyFailed
	}
	return nil
}

// verifyInput resolves the argument to an event, or to a bare document.
func verifyInput(ctx context.Context, arg string, relays []string) (*nostr.Event, []byte, error) {
	if prefix, v, err := nip19.Decode(arg); err == nil {
		var f nostr.Filter
		switch prefix {
		case "npub":
			f = nostr.Filter{Kinds: []int{nip.KindAnnouncement, verify.KindLegacyAnnouncement}, Authors: []string{v.(string)}}
		case "nevent":
			p := v.(nostr.EventPointer)
			f, relays = nostr.Filter{IDs: []string{p.ID}}, append(relays, p.Relays...)
		case "naddr":
			p := v.(nostr.EntityPointer)
			f, relays = nostr.Filter{Kinds: []int{p.Kind}, Authors: []string{p.PublicKey}}, append(relays, p.Relays...)
		default:
			return nil, nil, fmt.Errorf("verify: %s is not an npub, nevent or naddr", prefix)
		}
		if len(relays) == 0 {
			return nil, nil, errors.New("verify: give -relay to fetch from")
		}
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		pool := nostr.NewSimplePool(ctx)
		defer pool.Close("done")
		var newest *nostr.Event
		for re := range pool.FetchMany(ctx, relays, f) {
			if newest == nil || re.Event.CreatedAt > newest.CreatedAt {
				newest = re.Event
			}
		}
		if newest == nil {
			return nil, nil, fmt.Errorf("verify: nothing found on %s", strings.Join(relays, ", "))
		}
		return newest, nil, nil
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return nil, nil, fmt.Errorf("verify: %q is neither an npub/nevent/naddr nor a readable file: %w", arg, err)
	}
	if len(b) > 1<<20 {
		return nil, nil, errors.New("verify: file larger than 1 MiB")
	}
	var evt nostr.Event
	if err := json.Unmarshal(b, &evt); err == nil && evt.Kind != 0 {
		return &evt, nil, nil
	}
	doc, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, nil, errors.New("verify: the file holds neither event JSON nor a base64 document")
	}
	return nil, doc, nil
}
