#!/usr/bin/env bash
# Builds the enclave's Docker image, the input of `nitro-cli build-enclave`,
# without pulling any image. Usage (as root, with debootstrap and docker):
#
#   scripts/build-enclave-image.sh [TAG]      default TAG enclaved-enclave:dev
#
# The context it builds from (enclave-image/Dockerfile is FROM scratch):
#   rootfs/    Debian bookworm by debootstrap (minbase + docker.io, iptables,
#              iproute2, ca-certificates); the installed versions must equal
#              enclave-image/packages.lock, or the build stops. MIRROR picks
#              the mirror; a snapshot.debian.org URL of the lock's date gives
#              the same packages for as long as that archive stands.
#   enclaved   scripts/build-enclaved.sh (reproducible: same tree, same bytes)
#   init.sh, enclaved.toml from enclave-image/
# Every file's time is set to the last commit's, so the layer does not
# depend on when it was built. WORK keeps the context (default: a temp dir).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-enclaved-enclave:dev}
mirror=${MIRROR:-http://deb.debian.org/debian}
work=${WORK:-$(mktemp -d)}
ctx=$work/context
lock=$root/enclave-image/packages.lock
epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
rm -rf "$ctx"
mkdir -p "$ctx"

echo "rootfs: debootstrap from $mirror" >&2
debootstrap --variant=minbase --include=docker.io,iptables,iproute2,ca-certificates \
	bookworm "$ctx/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
chroot "$ctx/rootfs" dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort >"$work/installed"
if [ "${UPDATE_LOCK:-}" = 1 ]; then
	{ echo "# Packages of the enclave's root file system (scripts/build-enclave-image.sh)."; cat "$work/installed"; } >"$lock"
	echo "wrote $lock" >&2
elif ! diff -u <(grep -v '^#' "$lock") "$work/installed" >&2; then
	echo "the packages differ from $lock (above): use a snapshot mirror, or review the change and rerun with UPDATE_LOCK=1" >&2
	exit 1
fi
# What differs from one debootstrap to the next: caches, logs, ids.
rm -rf "$ctx/rootfs"/var/cache/apt/* "$ctx/rootfs"/var/lib/apt/lists/* "$ctx/rootfs"/var/log/* \
	"$ctx/rootfs"/var/cache/ldconfig/aux-cache "$ctx/rootfs"/debootstrap
: >"$ctx/rootfs/etc/machine-id"

"$root/scripts/build-enclaved.sh" "$ctx/enclaved"
cp "$root/enclave-image/Dockerfile" "$root/enclave-image/init.sh" "$root/enclave-image/enclaved.toml" "$ctx/"
find "$ctx" -exec touch --no-dereference --date="@$epoch" {} +
echo "enclaved sha256: $(sha256sum "$ctx/enclaved" | cut -d' ' -f1)" >&2
docker build -q -t "$tag" "$ctx"
echo "image $tag; next: nitro-cli build-enclave --docker-uri $tag --output-file enclaved.eif" >&2
