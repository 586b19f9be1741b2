#!/usr/bin/env bash
# Builds the local topology's image (FROM scratch: enclaved, btcd, lnd and
# the C libraries they link, copied from this machine) and runs
# docker-compose with the given arguments (project COMPOSE_PROJECT, default
# enclaved). Offline: nothing is pulled.
#   ./scripts/compose.sh up -d      ./scripts/compose.sh down -v
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
project=${COMPOSE_PROJECT:-enclaved}
if [ "${1:-}" = up ]; then
	ctx=$root/.compose
	rm -rf "$ctx"
	mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
	bins=$(./scripts/lightning-tools.sh --print-dir)
	go build -trimpath -o "$ctx/rootfs/bin/enclaved" ./cmd/enclaved
	cp "$bins/btcd" "$bins/lnd" "$ctx/rootfs/bin/"
	# The dynamic loader and libraries each binary names.
	for b in "$ctx"/rootfs/bin/*; do
		ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/lib/ {print $1}'
	done | sort -u | while read -r lib; do
		cp --parents -L "$lib" "$ctx/rootfs/"
	done
	cp compose/Dockerfile "$ctx/"
	docker-compose -p "$project" build
fi
exec docker-compose -p "$project" "$@"
