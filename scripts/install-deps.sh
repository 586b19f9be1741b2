#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for enclaved's tests and dev
# instance: Debian packages (docker-registry; gcc for cgo; curl for the
# quick start; iproute2, iptables and util-linux's nsenter for the egress
# proxy's namespace test; chromium, zbar-tools' zbarimg and a font for the
# web pages' browser test, which reads the pages' QR codes back;
# prometheus, whose promtool and server the operator metrics' tests check
# and scrape them with). Idempotent and quick when everything is present.
# Go and a running Docker engine are expected already (they come with the
# machine).
set -euo pipefail

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v gcc >/dev/null || need+=(gcc)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v nsenter >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)
command -v zbarimg >/dev/null || need+=(zbar-tools)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "installing: ${need[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	# Tests run their own Prometheus on 127.0.0.1; the package's service
	# (listening on every interface) is not wanted.
	if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
		$sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
	fi
fi

command -v go >/dev/null || { echo "go not found: install Go 1.26 first" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "docker engine not reachable: start dockerd (tests need it)" >&2; exit 1; }
