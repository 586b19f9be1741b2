#!/usr/bin/env bash
# Builds the enclaved binary reproducibly: the same source tree gives the
# same bytes wherever it is checked out. Used by the enclave image recipe
# and by the reproducibility test. Usage: build-enclaved.sh OUT [SRC_DIR]
set -euo pipefail
out=$(realpath -m "$1")
cd "${2:-$(dirname "$0")/..}"
export CGO_ENABLED=1 GOFLAGS=-mod=readonly GOOS=linux GOARCH=amd64
# -trimpath drops local paths; -buildvcs=false keeps git state out (the
# tree is the input); an empty build id and stripped symbols leave no
# per-build bytes.
go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o "$out" ./cmd/enclaved
