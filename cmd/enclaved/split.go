package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/link/linknet"
	"github.com/enclaved/enclaved/parent"
)

// runParent runs the host side: it serves the enclave's link and forwards
// public ports into it.
func runParent(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	if len(args) > 0 && args[0] == "launch" {
		return runLaunch(ctx, args[1:], stdout, stderr, environ)
	}
	fs := newFlagSet("parent", `Runs the parent, the untrusted host side of an enclave: it accepts the
enclave's link (parent.listen: vsock:PORT in production), dials TCP for it,
forwards public ports into it (parent.forward) and the operator's metrics
scrapes (metrics.listen), keeps its encrypted blobs and its log lines. It
holds no secret.`, stderr)
	load := configFlags(fs, environ, parentShorthands...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	all, err := load()
	if err != nil {
		return err
	}
	cfg := all.ForParent()
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	log = log.With("side", "parent")
	blobs := cfg.Parent.BlobDir
	if blobs == "" {
		blobs = filepath.Join(cfg.DataDir, "blobs")
	}
	if err := ensureDir(blobs, "blob dir", "parent.blob_dir (or -data-dir)"); err != nil {
		return err
	}
	meta := link.Metadata{InstanceID: cfg.Parent.InstanceID, PublicIP: cfg.Parent.PublicIP}
	// The operator's signatures are passed on as they are: the enclave
	// checks them, and verifiers check them against its attestation.
	read := func(key, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if f := cfg.Instance.BuildSignature; f != "" {
		if meta.Build, err = read("instance.build_signature", f); err != nil {
			return err
		}
	}
	if f := cfg.Instance.InstanceSignature; f != "" {
		if meta.Instance, err = read("instance.instance_signature", f); err != nil {
			return err
		}
	}
	for _, f := range cfg.Instance.Releases {
		r, err := read("instance.releases", f)
		if err != nil {
			return err
		}
		meta.Releases = append(meta.Releases, r)
	}
	srv := &parent.Server{BlobDir: blobs, LogOut: stderr, Log: log, Meta: meta}
	l, err := linknet.Listen(cfg.Parent.Listen)
	if err != nil {
		return fmt.Errorf("parent.listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(cfg.Parent.Forward)+2)
	for _, f := range cfg.Parent.Forward {
		addr, ps, _ := strings.Cut(f, "=")
		port, _ := strconv.Atoi(ps)
		fl, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("parent.forward %s: %w", f, err)
		}
		fmt.Fprintf(stdout, "forward:  %s → enclave port %d\n", fl.Addr(), port)
		go func() { errc <- srv.Forward(ctx, fl, port) }()
	}
	// The operator's scrapes go to the enclave's metrics, on the ingress
	// port of the same number: never to the public one (config checks).
	if a := cfg.Metrics.Listen; a != "" {
		ml, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		port := cfg.Metrics.Port()
		fmt.Fprintf(stdout, "metrics:  %s → enclave port %d\n", ml.Addr(), port)
		go func() { errc <- srv.Forward(ctx, ml, port) }()
	}
	fmt.Fprintf(stdout, "parent:   link on %s\n", l.Addr())
	go func() { errc <- srv.Serve(ctx, l) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// runEnclave runs the trusted side apart from its parent: every connection
// out goes through the parent's egress, allowed by the allowlist; the HTTP
// API is served on the connections the parent forwards in.
func runEnclave(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("enclave", `Runs the instance inside the enclave: it reaches the network only through
its parent (enclave.parent: vsock:3:PORT in production), dialing only the
relays, lightning.grpc and enclave.egress; the HTTP API is served on the
public port the parent forwards (enclave.ingress_port). Needs nostr.relays
and the lightning.* keys.`, stderr)
	load := configFlags(fs, environ, enclaveShorthands...)
	wait := fs.Duration("wait-config", 0, "wait this long for the -config file to appear (one written by enclaved devnet)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *wait > 0 {
		if f := fs.Lookup("config").Value.String(); f != "" {
			if err := waitForFile(ctx, f, *wait); err != nil {
				return err
			}
		}
	}
	all, err := load()
	if err != nil {
		return err
	}
	cfg := all.ForEnclave()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := ensureDir(cfg.DataDir, "data dir", "-data-dir (data_dir)"); err != nil {
		return err
	}
	return enclave.RunApart(ctx, cfg, Version, stderr, announce(banner{Title: "enclaved enclave"}, stdout, nil))
}
