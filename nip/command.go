// Package nip is enclaved's protocol code, with no I/O: the bot's command
// grammar, decoding and encoding of DMs (NIP-04, NIP-17/44/59) and mentions
// (NIP-10 threading), and builders for the events the instance publishes.
//
// It runs inside the enclave and treats every input as hostile: parsers
// return short, specific errors and never panic (they are fuzzed).
package nip

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Verb is a command's first word.
type Verb string

// The commands of DESIGN.md.
const (
	VerbHelp   Verb = "help"
	VerbDeploy Verb = "deploy"
	VerbStatus Verb = "status"
	VerbTopup  Verb = "topup"
	VerbLogs   Verb = "logs"
	VerbStop   Verb = "stop"
	VerbStart  Verb = "start"
	VerbDelete Verb = "delete"
	// VerbInstance tells what the instance is: its key, release, price,
	// unit and free capacity.
	VerbInstance Verb = "instance"
)

// Verbs are every command verb, in the order help lists them.
var Verbs = []Verb{VerbHelp, VerbDeploy, VerbStatus, VerbTopup, VerbLogs, VerbStop, VerbStart, VerbDelete, VerbInstance}

// Limits of the grammar.
const (
	MaxCommandLen = 4096
	MaxUnits      = 64
	MaxHours      = 24 * 90
	MaxEnv        = 32
	MaxEgress     = 16
	MaxLogLines   = 1000
	DefaultLines  = 50
	MaxTopupSats  = 100_000_000 // 1 BTC
	maxImageLen   = 512
)

// DeployUsage is deploy's synopsis.
const DeployUsage = "deploy <image> [units=N] [hours=H] [name=X] [env=K=V ...] [egress=HOST[:PORT],...] [port=N] [admin=yes]"

// EnvVar is one env=K=V option of deploy.
type EnvVar struct{ Key, Value string }

// Command is a parsed command. Fields not used by its verb are zero.
type Command struct {
	Verb   Verb
	Image  string   // deploy
	Units  int      // deploy; default 1
	Hours  int      // deploy; default 1
	Name   string   // deploy (optional)
	Env    []EnvVar // deploy
	Egress []string // deploy: hosts ("host" or "host:port") the container may reach
	Port   int      // deploy: the container's HTTP port, served at https://NAME.<instance host>
	// Admin (deploy, admin=yes) is the owner's consent to be named as the
	// container's admin in its public status events (upstream's
	// `p <owner> admin` tag); off by default, as an owner's pubkey is
	// otherwise private.
	Admin  bool
	Target string // status (optional), topup, logs, stop, start, delete: a name or npub
	Sats   int64  // topup
	Lines  int    // logs; default DefaultLines
}

// CommandError is a user mistake; its message is meant for the user.
type CommandError struct{ Msg string }

func (e *CommandError) Error() string { return e.Msg }

func errorf(format string, args ...any) error {
	return &CommandError{Msg: fmt.Sprintf(format, args...)}
}

// ErrEmpty is returned for a message with no command in it.
var ErrEmpty = &CommandError{Msg: "empty message"}

var (
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	targetRE = regexp.MustCompile(`^[a-z0-9-]{1,100}$`)
)

// ParseCommand parses a DM or mention text. Leading mention tokens
// (nostr:npub1…, nostr:nprofile1…, @name) are skipped; the verb is
// case-insensitive; options are key=value.
func ParseCommand(text string) (Command, error) {
	if len(text) > MaxCommandLen {
		return Command{}, errorf("message too long (%d bytes, at most %d)", len(text), MaxCommandLen)
	}
	words := strings.Fields(text)
	for len(words) > 0 && isMention(words[0]) {
		words = words[1:]
	}
	if len(words) == 0 {
		return Command{}, ErrEmpty
	}
	verb := Verb(strings.ToLower(words[0]))
	args := words[1:]
	switch verb {
	case VerbHelp, VerbInstance:
		return Command{Verb: verb}, nil
	case VerbDeploy:
		return parseDeploy(args)
	case VerbStatus:
		c := Command{Verb: verb}
		if len(args) > 1 {
			return c, errorf("status takes at most one container name or npub")
		}
		if len(args) == 1 {
			t, err := parseTarget(args[0])
			if err != nil {
				return c, err
			}
			c.Target = t
		}
		return c, nil
	case VerbTopup:
		c := Command{Verb: verb}
		if len(args) != 2 {
			return c, errorf("usage: topup <name|npub> <sats>")
		}
		t, err := parseTarget(args[0])
		if err != nil {
			return c, err
		}
		sats, err := strconv.ParseInt(strings.ReplaceAll(args[1], "_", ""), 10, 64)
		if err != nil || sats <= 0 || sats > MaxTopupSats {
			return c, errorf("topup amount %q: want whole sats from 1 to %d", args[1], MaxTopupSats)
		}
		c.Target, c.Sats = t, sats
		return c, nil
	case VerbLogs:
		c := Command{Verb: verb, Lines: DefaultLines}
		if len(args) < 1 || len(args) > 2 {
			return c, errorf("usage: logs <name|npub> [lines]")
		}
		t, err := parseTarget(args[0])
		if err != nil {
			return c, err
		}
		c.Target = t
		if len(args) == 2 {
			n, err := strconv.Atoi(args[1])
			if err != nil || n <= 0 || n > MaxLogLines {
				return c, errorf("lines %q: want a number from 1 to %d", args[1], MaxLogLines)
			}
			c.Lines = n
		}
		return c, nil
	case VerbStop, VerbStart, VerbDelete:
		c := Command{Verb: verb}
		if len(args) != 1 {
			return c, errorf("usage: %s <name|npub>", verb)
		}
		t, err := parseTarget(args[0])
		if err != nil {
			return c, err
		}
		c.Target = t
		return c, nil
	default:
		return Command{}, errorf("unknown command %q", clip(words[0], 32))
	}
}

func parseDeploy(args []string) (Command, error) {
	c := Command{Verb: VerbDeploy, Units: 1, Hours: 1}
	for _, a := range args {
		k, v, isOpt := strings.Cut(a, "=")
		if !isOpt {
			if c.Image != "" {
				return c, errorf("deploy takes one image, got %q and %q", clip(c.Image, 64), clip(a, 64))
			}
			if len(a) > maxImageLen {
				return c, errorf("image reference too long (%d bytes)", len(a))
			}
			c.Image = a
			continue
		}
		switch strings.ToLower(k) {
		case "units":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxUnits {
				return c, errorf("units=%s: want a number from 1 to %d", clip(v, 16), MaxUnits)
			}
			c.Units = n
		case "hours":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxHours {
				return c, errorf("hours=%s: want a number from 1 to %d", clip(v, 16), MaxHours)
			}
			c.Hours = n
		case "name":
			if !nameRE.MatchString(v) {
				return c, errorf("name=%s: use 1-32 lowercase letters, digits and dashes, starting with a letter", clip(v, 40))
			}
			if strings.HasPrefix(v, "npub1") {
				return c, errorf("name=%s: a name may not look like an npub", clip(v, 40))
			}
			c.Name = v
		case "env":
			ek, ev, ok := strings.Cut(v, "=")
			if !ok || !envKeyRE.MatchString(ek) {
				return c, errorf("env=%s: want env=KEY=value with KEY made of letters, digits and _", clip(v, 40))
			}
			if len(c.Env) == MaxEnv {
				return c, errorf("at most %d env options", MaxEnv)
			}
			c.Env = append(c.Env, EnvVar{Key: ek, Value: ev})
		case "egress":
			for _, h := range strings.Split(v, ",") {
				if h == "" {
					return c, errorf("egress=%s: want egress=HOST[:PORT][,HOST[:PORT]...]", clip(v, 40))
				}
				if len(c.Egress) == MaxEgress {
					return c, errorf("at most %d egress hosts", MaxEgress)
				}
				c.Egress = append(c.Egress, strings.ToLower(h))
			}
		case "port":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return c, errorf("port=%s: want the container's HTTP port, 1 to 65535", clip(v, 16))
			}
			c.Port = n
		case "admin":
			switch strings.ToLower(v) {
			case "yes":
				c.Admin = true
			case "no":
				c.Admin = false
			default:
				return c, errorf("admin=%s: want admin=yes (name me as its admin in its public status) or admin=no", clip(v, 16))
			}
		default:
			return c, errorf("unknown option %q; deploy takes units=, hours=, name=, env=, egress=, port=, admin=", clip(k, 32))
		}
	}
	if c.Image == "" {
		return c, errorf("usage: " + DeployUsage)
	}
	return c, nil
}

func parseTarget(s string) (string, error) {
	t := strings.ToLower(s)
	if !targetRE.MatchString(t) {
		return "", errorf("%q is not a container name or npub", clip(s, 40))
	}
	return t, nil
}

// StartsWithVerb says whether text, after any leading mentions, starts
// with a command verb: only such notes that mention the instance are
// commands (everything else in a public thread is conversation).
func StartsWithVerb(text string) bool {
	words := strings.Fields(text)
	for len(words) > 0 && isMention(words[0]) {
		words = words[1:]
	}
	if len(words) == 0 {
		return false
	}
	return slices.Contains(Verbs, Verb(strings.ToLower(words[0])))
}

func isMention(w string) bool {
	w = strings.ToLower(w)
	return strings.HasPrefix(w, "nostr:npub1") || strings.HasPrefix(w, "nostr:nprofile1") ||
		strings.HasPrefix(w, "@")
}

// clip shortens user input quoted back in an error.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// IsUserError reports whether err is a CommandError (safe to show the user).
func IsUserError(err error) bool {
	var ce *CommandError
	return errors.As(err, &ce)
}
