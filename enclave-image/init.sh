#!/bin/sh
# PID 1 of the enclave. The enclave has no network interface but loopback,
# and its file system lives in RAM. It starts dockerd (whose pulls go out
# through enclaved's CONNECT proxy on 127.0.0.1:3128, under the egress
# allowlist), then runs enclaved, which reaches its parent at vsock CID 3.
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null || true
mount -t sysfs sys /sys 2>/dev/null || true
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null || true
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /var/lib/docker /var/lib/enclaved
mount -t tmpfs tmpfs /var/lib/docker
ip link set lo up
# Containers reach each other and the proxy through their bridges: routing
# must be on, and nothing leaves but through enclaved's proxies.
echo 1 > /proc/sys/net/ipv4/ip_forward
# Each running container takes about 17 tasks (its shim and its process's
# threads) and may start up to its units' pids limit: the kernel's default
# of 32768 pids would stop the whole enclave, enclaved included, at about
# 1,900 containers, or fewer if renters use their pids.
echo 4194304 > /proc/sys/kernel/pid_max
# enclaved gives each container's network a /29 of instance.container_subnets
# (10.200.0.0/14) itself; networks made without a subnet (none by enclaved)
# come from small pools next to it rather than the default pools, which run
# out after about thirty networks.
HTTPS_PROXY=http://127.0.0.1:3128 HTTP_PROXY=http://127.0.0.1:3128 NO_PROXY= \
	dockerd --host=unix:///run/docker.sock --data-root=/var/lib/docker --log-level=warn \
	--default-address-pool base=10.204.0.0/14,size=29 >/run/dockerd.log 2>&1 &
i=0
until [ -S /run/docker.sock ] && docker -H unix:///run/docker.sock version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -gt 300 ]; then
		echo "init: dockerd did not start" >&2
		tail -n 20 /run/dockerd.log >&2
		exit 1
	fi
	sleep 0.1
done
export DOCKER_HOST=unix:///run/docker.sock
exec /usr/local/bin/enclaved enclave -config /etc/enclaved/enclaved.toml
