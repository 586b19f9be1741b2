// Command enclaved is the single enclaved binary: `enclaved dev` runs a whole
// local instance (`devnet` its relay and regtest Lightning alone); `enclave`
// and `parent` run the two sides of a split instance, `keystore` a key
// store; `dm` is a small renter's client; `verify` checks an instance,
// `audit` the database's ledger, and `release` signs releases, builds and
// instances and checks such signatures.
// main only parses arguments, handles signals and exit codes; the work is in
// run, so tests can drive the whole program.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Environ())
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "enclaved:", err)
		os.Exit(1)
	}
}

const usage = `enclaved — rent containers in an attested enclave over Nostr and Lightning

usage:
  enclaved dev [flags]          run a whole local instance (embedded relay, regtest
                                Lightning, local Docker; dev attestation)
  enclaved dev pay <bolt11>     pay an invoice from the dev instance's regtest payer
  enclaved devnet               run the embedded relay and regtest Lightning alone (for
                                a split dev instance; docker-compose runs it)
  enclaved parent [flags]       run the host side: the enclave's link, egress, ingress,
                                blobs, log sink (holds no secret)
  enclaved parent launch        start the enclave with nitro-cli run-enclave
  enclaved enclave [flags]      run the instance inside the enclave, reaching the
                                network only through the parent
  enclaved keystore [flags]     run a key store (keycrux-compatible, kind 29525) that
                                releases instances' keys to attested enclaves only
  enclaved dm <npub> <command>  send a command by DM (or -mention) and print the replies
  enclaved verify <npub|file>   verify an instance's attestation (pass/fail per check)
  enclaved audit                check the database's balances against its ledger
                                (read-only; pass/FAIL per invariant, unclaimed payments)
  enclaved release sign|sign-build|sign-instance|verify
                                sign a release, build or instance; check a signature
  enclaved version              print the version

run "enclaved dev -h" for the flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr, environ, nil)
	case "devnet":
		return runDevnet(ctx, args[1:], stdout, stderr, environ)
	case "parent":
		return runParent(ctx, args[1:], stdout, stderr, environ)
	case "enclave":
		return runEnclave(ctx, args[1:], stdout, stderr, environ)
	case "keystore":
		return runKeyStore(ctx, args[1:], stdout, stderr, environ)
	case "dm":
		return runDM(ctx, args[1:], stdout, stderr, environ)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr, environ)
	case "release":
		return runRelease(ctx, args[1:], stdout, stderr, environ)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "enclaved", Version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
