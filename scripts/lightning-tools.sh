#!/usr/bin/env bash
# Builds the regtest Lightning tools (btcd, btcctl, lnd, lncli) from the Go
# module proxy at pinned versions, into a cache directory keyed on version and
# build tags, and prints that directory. A second run finds the cache and
# returns at once.
#
#   ENCLAVED_TOOLS  cache root (default: $HOME/.cache/enclaved/tools)
#
# With --print-dir it only prints the directory, building nothing.
set -euo pipefail

BTCD_VERSION=v0.26.2
LND_VERSION=v0.21.3-beta
LND_TAGS="signrpc walletrpc chainrpc invoicesrpc peersrpc"

root=${ENCLAVED_TOOLS:-$HOME/.cache/enclaved/tools}
key="btcd-${BTCD_VERSION}_lnd-${LND_VERSION}_$(echo "$LND_TAGS" | tr ' ' '-')"
out="$root/$key"
if [ "${1:-}" = "--print-dir" ]; then
	echo "$out"
	exit 0
fi

if [ -x "$out/lnd" ] && [ -x "$out/lncli" ] && [ -x "$out/btcd" ] && [ -x "$out/btcctl" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$out"
export GOFLAGS=-mod=mod

echo "building btcd $BTCD_VERSION into $out" >&2
GOBIN="$out" go install "github.com/btcsuite/btcd@$BTCD_VERSION" "github.com/btcsuite/btcd/cmd/btcctl@$BTCD_VERSION"

# lnd's go.mod has replace directives, so `go install lnd@v` is refused: build
# inside a writable copy of the downloaded module instead.
echo "building lnd $LND_VERSION ($LND_TAGS) into $out" >&2
src=$(go mod download -json "github.com/lightningnetwork/lnd@$LND_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "lnd source not found after download" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
(cd "$work" && go build -trimpath -ldflags "-s -w" -tags "$LND_TAGS" -o "$out/" ./cmd/lnd ./cmd/lncli)
echo "$out"
