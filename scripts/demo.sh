#!/usr/bin/env bash
# demo.sh shows leanshim at work under a private containerd, step by step:
# it runs a container, shows the task, the shim's process tree and memory,
# then deletes everything it made. It builds nothing: `make demo` builds
# bin/containerd-shim-lean-v2 first.
#
# It never touches a containerd it did not start: its daemon has its own temp
# dirs, socket and namespace, and finds the shim through PATH=<repo>/bin:$PATH.
#
#   DEMO_RUNTIME=io.containerd.runc.v2 scripts/demo.sh   # same demo, containerd's own shim
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runtime=${DEMO_RUNTIME:-io.containerd.lean.v2}
ns=leanshim-demo
id=demo

if ((EUID != 0)); then
	echo "demo.sh: containerd and runc need root; re-running with sudo" >&2
	exec sudo DEMO_RUNTIME="$runtime" bash "${BASH_SOURCE[0]}" "$@"
fi

if [[ -t 1 ]]; then bold=$'\e[1m' plain=$'\e[0m'; else bold= plain=; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
show() { # show CMD...: print a command, quoted as you would type it, then run it
	local arg line='$'
	for arg; do
		if [[ $arg =~ [^A-Za-z0-9_./=:,+-] ]]; then line+=" '$arg'"; else line+=" $arg"; fi
	done
	echo "$line"
	"$@"
}
die() {
	echo "demo.sh: $*" >&2
	exit 1
}
# wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

step "Checking dependencies (scripts/deps.sh)"
bash "$repo/scripts/deps.sh"
IFS=. read -ra parts <<<"$runtime"
((${#parts[@]} >= 2)) || die "bad runtime type $runtime"
shim_name="containerd-shim-${parts[-2]}-${parts[-1]}"
export PATH="$repo/bin:$PATH"
shim_path=$(command -v "$shim_name") || die "$shim_name not found in $repo/bin or PATH: run 'make build' first"
echo "runtime $runtime -> $shim_path"

# Everything below is undone by cleanup, whatever happens.
tmp=$(mktemp -d /tmp/lsdemo.XXXXXX)
sock=$tmp/c.sock
containerd_pid=
ctr() { command ctr --address "$sock" -n "$ns" "$@"; }

cleanup() {
	local rc=$?
	set +e
	if [[ -n $containerd_pid ]]; then
		step "Cleaning up"
		if ctr task ls -q 2>/dev/null | grep -qx "$id"; then
			ctr task kill -s SIGKILL "$id" 2>/dev/null
			ctr task rm -f "$id" >/dev/null 2>&1
		fi
		ctr container rm "$id" 2>/dev/null
		echo "stopping containerd (pid $containerd_pid)"
		kill -TERM "$containerd_pid" 2>/dev/null
		for _ in $(seq 100); do
			kill -0 "$containerd_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$containerd_pid" 2>/dev/null
		wait "$containerd_pid" 2>/dev/null
		# runc leaves its per-namespace dirs behind; remove them if empty.
		rmdir "/run/containerd/runc/$ns" /sys/fs/cgroup/*/"$ns" "/sys/fs/cgroup/$ns" 2>/dev/null
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Building a busybox rootfs in $tmp/rootfs"
rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,proc,sys,dev,etc,root,tmp}
chmod 1777 "$rootfs/tmp"
cp /usr/bin/busybox "$rootfs/bin/busybox"
for applet in $(/usr/bin/busybox --list); do
	[[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
echo "$(ls "$rootfs/bin" | wc -l) entries in bin/"

step "Starting a private containerd (socket $sock, namespace $ns)"
cat >"$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = ""
EOF
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
containerd_pid=$!
wait_for 20 test -S "$sock" || {
	cat "$tmp/containerd.log" >&2
	die "containerd did not start"
}
wait_for 20 ctr version >/dev/null || die "containerd does not answer on $sock"
echo "containerd pid $containerd_pid, log $tmp/containerd.log"

# ctr's --rootfs is a boolean: the rootfs path takes the image's place, after all flags.
flags=(--runtime "$runtime" --fifo-dir "$tmp/fifo")
task_is() { ctr task ls | grep -Eq "^$id +[0-9]+ +$1\b"; }
shim_gone() { ! kill -0 "$shim_pid" 2>/dev/null || grep -q '^State:.*zombie' "/proc/$shim_pid/status"; }
# find_shim: the pid of the shim binary whose argv has -namespace $ns -id $id.
find_shim() {
	local p args
	for p in $(pgrep -f -- "$shim_name"); do
		args=" $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
		[[ $(basename "${args%% -*}") == "$shim_name" && $args == *" -namespace $ns "* && $args == *" -id $id "* ]] &&
			echo "$p"
	done
}
echo "(ctr below stands for: ctr --address $sock -n $ns)"

step "A container that prints and exits"
show ctr run "${flags[@]}" --rm --rootfs "$rootfs" hello /bin/echo hello

step "A detached container"
show ctr run "${flags[@]}" -d --rootfs "$rootfs" "$id" /bin/sh -c 'echo hello from leanshim; sleep 30'
wait_for 10 task_is RUNNING || die "task $id is not RUNNING"
show ctr task ls
shim_pid=$(find_shim | head -1)
[[ -n $shim_pid ]] || die "no $shim_name process with -namespace $ns -id $id"

step "The shim ($shim_name, pid $shim_pid) and its children"
descendants() { # descendants PID: PID and everything below it
	echo "$1"
	local child
	for child in $(ps -o pid= --ppid "$1"); do descendants "$child"; done
}
show ps --forest -o pid,ppid,rss,comm -p "$(descendants "$shim_pid" | paste -sd,)"

step "The shim's memory (/proc/$shim_pid/smaps_rollup, kB)"
# Freshly written binaries count as Private_Dirty until written back.
sync
grep -E '^(Rss|Pss|Shared_Clean|Private_Clean|Private_Dirty):' "/proc/$shim_pid/smaps_rollup"

step "Killing and deleting the task and the container"
show ctr task kill -s SIGKILL "$id"
wait_for 10 task_is STOPPED || die "task $id did not stop"
show ctr task rm "$id"
show ctr container rm "$id"
wait_for 10 shim_gone || die "shim $shim_pid is still running after the task was deleted"
echo "shim $shim_pid has exited"
