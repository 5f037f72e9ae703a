#!/usr/bin/env bash
# Installs the real components the tests use (DESIGN.md section 6) when they
# are missing and we may: as root on Debian. Elsewhere it lists what is
# missing; the tests that need it then skip with a message naming it.
set -euo pipefail

# tool -> Debian package
declare -A pkg=(
	[runc]=runc
	[fusermount3]=fuse3
	[docker-registry]=docker-registry
	[skopeo]=skopeo
	[containerd]=containerd
	[ctr]=containerd
	[ip]=iproute2
	[tc]=iproute2
	[nft]=nftables
	[debootstrap]=debootstrap
	[chromium]=chromium
	[etcd]=etcd-server
	[systemd-analyze]=systemd
)

missing=()
for tool in "${!pkg[@]}"; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg[$tool]}")
done
# Not a command: the CNI loopback plugin CRI's network readiness needs
# (e2e/cri_test.go).
[ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	echo "deps: missing Debian packages: ${missing[*]}" >&2
	echo "deps: tests that need them will skip (install them as root: apt-get install ${missing[*]})" >&2
fi
