package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/enclaved/enclaved/config"
)

// setFlags collects repeated -set key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, " ") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// A shorthand is a flag that stands for -set key=value. Every mode's
// shorthands are lines of the tables below; configFlags turns them into
// -set pairs, so no mode maps its flags by hand.
type shorthand struct {
	flag, key, usage string
	// repeat makes the flag repeatable; its values form the key's list.
	repeat bool
	// also are key=value pairs the flag sets besides its own key.
	also []string
}

// Shorthands every mode has, applied before the -set flags.
var commonShorthands = []shorthand{
	{flag: "data-dir", key: "data_dir", usage: "data directory"},
	{flag: "log-level", key: "log.level", usage: "debug, info, warn or error"},
}

// Each mode's own shorthands, applied after the -set flags.
var (
	devShorthands = []shorthand{
		// A relay given turns the embedded one off.
		{flag: "relay", key: "nostr.relays", usage: "relay URL to use instead of the embedded relay", repeat: true, also: []string{"dev.relay_listen="}},
		{flag: "lnd-grpc", key: "lightning.grpc", usage: "the operator's LND gRPC host:port (default: start a regtest pair)"},
		{flag: "lnd-tls-cert", key: "lightning.tls_cert", usage: "path to that LND's tls.cert"},
		{flag: "lnd-macaroon", key: "lightning.macaroon", usage: "path to its invoice macaroon"},
		{flag: "http", key: "http.listen", usage: "HTTP API listen address"},
	}
	parentShorthands = []shorthand{
		{flag: "listen", key: "parent.listen", usage: "where the enclave connects"},
		{flag: "forward", key: "parent.forward", usage: "ADDR=PORT: forward public ADDR to the enclave's ingress PORT", repeat: true},
	}
	enclaveShorthands = []shorthand{
		{flag: "parent", key: "enclave.parent", usage: "how to reach the parent"},
	}
	keyStoreShorthands = []shorthand{
		{flag: "relay", key: "nostr.relays", usage: "the relay to listen on"},
	}
)

// register adds the shorthands' flags to fs; the function it returns
// appends the -set pairs of those given to sets.
func register(fs *flag.FlagSet, list []shorthand) func(sets []string) []string {
	values := make([]func() []string, len(list))
	for i, s := range list {
		if s.repeat {
			var v setFlags
			fs.Var(&v, s.flag, s.usage+"; repeatable (shorthand for -set "+s.key+"=...)")
			values[i] = func() []string { return v }
		} else {
			v := fs.String(s.flag, "", s.usage+" (shorthand for -set "+s.key+"=...)")
			values[i] = func() []string {
				if *v == "" {
					return nil
				}
				return []string{*v}
			}
		}
	}
	return func(sets []string) []string {
		for i, s := range list {
			if v := values[i](); len(v) > 0 {
				sets = append(sets, s.key+"="+strings.Join(v, ","))
				sets = append(sets, s.also...)
			}
		}
		return sets
	}
}

// configFlags registers the flags every mode shares and the mode's own
// shorthands, and returns a function that loads the configuration once
// the flags are parsed.
func configFlags(fs *flag.FlagSet, environ []string, mode ...shorthand) func() (config.Config, error) {
	file := fs.String("config", "", "TOML config file (env ENCLAVED_CONFIG)")
	common := register(fs, commonShorthands)
	var sets setFlags
	fs.Var(&sets, "set", "override one config key, as key=value; repeatable")
	own := register(fs, mode)
	return func() (config.Config, error) {
		src := config.Sources{File: *file, Environ: environ}
		if src.File == "" {
			src.File = lookupEnv(environ, "ENCLAVED_CONFIG")
		}
		src.Sets = own(append(common(nil), sets...))
		return config.Load(src)
	}
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

func newFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: enclaved %s [flags]\n\n%s\n\nflags:\n", name, help)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nconfig keys (file, env ENCLAVED_<KEY>, or -set key=value): %s\n", strings.Join(config.Keys(), ", "))
	}
	return fs
}
