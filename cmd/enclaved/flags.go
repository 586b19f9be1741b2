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

// configFlags registers the flags every mode shares and returns a function
// that loads the configuration once the flags are parsed. more (optional)
// adds a mode's own flags as -set pairs, after the shared ones.
func configFlags(fs *flag.FlagSet, environ []string) func(more func([]string) []string) (config.Config, error) {
	file := fs.String("config", "", "TOML config file (env ENCLAVED_CONFIG)")
	dataDir := fs.String("data-dir", "", "data directory (shorthand for -set data_dir=...)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (shorthand for -set log.level=...)")
	var sets setFlags
	fs.Var(&sets, "set", "override one config key, as key=value; repeatable")
	return func(more func([]string) []string) (config.Config, error) {
		src := config.Sources{File: *file, Environ: environ}
		if src.File == "" {
			src.File = lookupEnv(environ, "ENCLAVED_CONFIG")
		}
		if *dataDir != "" {
			src.Sets = append(src.Sets, "data_dir="+*dataDir)
		}
		if *logLevel != "" {
			src.Sets = append(src.Sets, "log.level="+*logLevel)
		}
		src.Sets = append(src.Sets, sets...)
		if more != nil {
			src.Sets = more(src.Sets)
		}
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
