#!/usr/bin/env bash
# deps.sh installs the Debian packages leanshim's integration tests and demo
# need, each only if what it provides is missing. Silent when all is present;
# `apt-get update` runs at most once, and only if something must be installed.
# Used by `make test` and `make demo`.
set -euo pipefail

# package: the commands/files whose presence means it is installed
# (containerd also provides ctr and containerd-shim-runc-v2).
checks=(
	"runc:runc"
	"crun:crun"
	"containerd:containerd ctr containerd-shim-runc-v2"
	"busybox-static:/usr/bin/busybox"
	"criu:criu"
	"protobuf-compiler:protoc"
	"containernetworking-plugins:/usr/lib/cni/ptp /usr/lib/cni/host-local /usr/lib/cni/loopback"
)

present() {
	case "$1" in
	/usr/bin/busybox)
		# The container rootfs has no libc: a dynamic busybox (package
		# busybox) is as good as none. ldd fails on static binaries.
		[[ -x $1 ]] && ! ldd "$1" >/dev/null 2>&1
		;;
	/*) [[ -e $1 ]] ;;
	*) command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]] ;;
	esac
}

missing=()
for entry in "${checks[@]}"; do
	pkg=${entry%%:*}
	for item in ${entry#*:}; do
		if ! present "$item"; then
			missing+=("$pkg")
			break
		fi
	done
done
((${#missing[@]} == 0)) && exit 0

sudo=()
if ((EUID != 0)); then
	command -v sudo >/dev/null 2>&1 || {
		echo "deps.sh: need root to install: ${missing[*]}" >&2
		exit 1
	}
	sudo=(sudo)
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
