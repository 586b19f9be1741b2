package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/devregistry"
	"github.com/enclaved/enclaved/records"
)

// devHints are the lines `enclaved dev` prints for a newcomer to paste into
// a second terminal: the whole quick start, with this instance's npub, the
// demo image and the flags a client run from here needs.
type devHints struct {
	Self     string        // how to run this binary from here (selfCommand)
	Defaults config.Config // what a client run from here uses without flags
	Demo     string        // the demo image, pinned by digest; "" if none
	Pay      bool          // the regtest payer runs (dev pay and dev zap work)
}

// zapSats is what the hints zap.
const zapSats = 21

func (h devHints) text(ctx context.Context, cfg config.InstanceConfig, in *enclave.Instance, npub, relay string) string {
	var flags string
	if cfg.DataDir != h.Defaults.DataDir {
		flags += " -data-dir " + cfg.DataDir
	}
	if own, err := clientRelays(h.Defaults, nil); err != nil || !slices.Contains(own, relay) {
		flags += " -relay " + relay
	}
	dm := h.Self + " dm" + flags + " " + npub
	var sb strings.Builder
	sb.WriteString("\nTry it from a second terminal, in this directory:\n")
	fmt.Fprintf(&sb, "  %s help\n", dm)
	if h.Demo == "" {
		fmt.Fprintf(&sb, "  %s deploy <image> units=1 hours=1\n", dm)
		if h.Pay {
			sb.WriteString("It prints a quote and waits for the payment; pay it from a third terminal:\n")
			fmt.Fprintf(&sb, "  %s dev pay%s <invoice>\n", h.Self, dataDirFlag(flags))
		}
		return sb.String()
	}
	name := demoName(ctx, in.Deployer)
	fmt.Fprintf(&sb, "  %s deploy %s name=%s port=8080\n", dm, h.Demo, name)
	if h.Pay {
		sb.WriteString("It prints a quote and waits for the payment; pay it from a third terminal:\n")
		fmt.Fprintf(&sb, "  %s dev pay%s <invoice>\n", h.Self, dataDirFlag(flags))
	}
	sb.WriteString("Then check on it, zap it, open its page, read its logs and stop it:\n")
	fmt.Fprintf(&sb, "  %s status %s\n", dm, name)
	if h.Pay {
		fmt.Fprintf(&sb, "  %s dev zap%s %s %d\n", h.Self, flags, in.Zaps.Address(name), zapSats)
	}
	fmt.Fprintf(&sb, "  curl -s %s\n", in.PageURL(name))
	fmt.Fprintf(&sb, "  %s logs %s\n", dm, name)
	fmt.Fprintf(&sb, "  %s stop %s\n", dm, name)
	return sb.String()
}

// dataDirFlag keeps only the -data-dir of a client's flags.
func dataDirFlag(flags string) string {
	if i := strings.Index(flags, " -data-dir "); i >= 0 {
		rest := flags[i+len(" -data-dir "):]
		if j := strings.Index(rest, " -"); j >= 0 {
			rest = rest[:j]
		}
		return " -data-dir " + rest
	}
	return ""
}

// demoName is the first of hello, hello-2, hello-3 … no container on this
// instance has had (names are unique for good).
func demoName(ctx context.Context, d *deployer.Deployer) string {
	for i := 1; ; i++ {
		name := "hello"
		if i > 1 {
			name = fmt.Sprintf("hello-%d", i)
		}
		if _, err := d.Records.Find(ctx, name); errors.Is(err, records.ErrNotFound) || i >= 1000 {
			return name
		}
	}
}

// selfCommand is how this binary is run from the current directory:
// "go run ./cmd/enclaved" under go run, "enclaved" when found on the PATH,
// else the path it was started by (./bin/enclaved after make dev).
func selfCommand() string {
	if exe, err := os.Executable(); err == nil && strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run ./cmd/enclaved"
	}
	arg0 := os.Args[0]
	switch {
	case !strings.ContainsRune(arg0, filepath.Separator):
		return "enclaved"
	case filepath.IsAbs(arg0), strings.HasPrefix(arg0, "./"), strings.HasPrefix(arg0, "../"):
		return arg0
	}
	return "./" + arg0
}

// clientDefaults is the configuration a client command run from here with
// no flags would load (the same environment and ENCLAVED_CONFIG file).
func clientDefaults(environ []string) config.Config {
	cfg, err := config.Load(config.Sources{File: lookupEnv(environ, "ENCLAVED_CONFIG"), Environ: environ})
	if err != nil {
		return config.Default()
	}
	return cfg
}

// isLoopbackAddr says whether host:port listens on this machine only.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// serveDemo starts the dev registry on addr and pushes the demo image built
// from program, a static linux/amd64 executable.
func serveDemo(ctx context.Context, addr, program string) (*devregistry.Registry, devregistry.Image, error) {
	if !isLoopbackAddr(addr) {
		return nil, devregistry.Image{}, fmt.Errorf("dev.registry_listen %q: the demo registry listens on loopback only", addr)
	}
	body, err := os.ReadFile(program)
	if err != nil {
		return nil, devregistry.Image{}, fmt.Errorf("-demo: %w", err)
	}
	if err := staticAMD64(program); err != nil {
		return nil, devregistry.Image{}, fmt.Errorf("-demo %s: %w (build it with CGO_ENABLED=0 GOOS=linux GOARCH=amd64)", program, err)
	}
	reg, err := devregistry.Start(addr)
	if err != nil {
		return nil, devregistry.Image{}, fmt.Errorf("dev.registry_listen: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	img, err := reg.PushDemo(pctx, body)
	if err != nil {
		reg.Close()
		return nil, devregistry.Image{}, err
	}
	reg.Seal()
	return reg, img, nil
}

// staticAMD64 checks that path is a static linux/amd64 executable, the only
// kind that runs in an image FROM scratch.
func staticAMD64(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return errors.New("not an ELF executable")
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return errors.New("not a linux/amd64 executable")
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}
