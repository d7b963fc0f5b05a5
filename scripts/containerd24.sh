#!/usr/bin/env bash
# containerd24.sh installs containerd, ctr and containerd-shim-runc-v2 of
# containerd v2.4.2 into a git-ignored cache, for the integration tests that
# run leanshim under containerd 2.x. It builds them once with `go install`
# from the Go module proxy (about 2 minutes) and is silent afterwards.
#
#   bash scripts/containerd24.sh          install if missing; print nothing
#   bash scripts/containerd24.sh --print  install if missing; print the bin dir
#
# The integration suite finds the binaries in .cache/containerd-2.4.2/bin
# (or $LEANSHIM_CONTAINERD24, a directory holding the same three binaries).
#
# Build tags follow containerd's own Makefile: the daemon and ctr without the
# btrfs, devmapper and zfs snapshotters (their C headers are not installed);
# the shim as containerd's release builds it, without gRPC and CLI docs.
set -euo pipefail

readonly VERSION=v2.4.2
readonly MODULE=github.com/containerd/containerd/v2
readonly DAEMON_TAGS="no_btrfs no_devmapper no_zfs"
readonly SHIM_TAGS="urfave_cli_no_docs no_grpc"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly bin=$repo/.cache/containerd-${VERSION#v}/bin

# built NAME succeeds if $bin/NAME exists and was built from $MODULE@$VERSION.
built() {
	local info
	[[ -x $bin/$1 ]] || return 1
	info=$(go version -m "$bin/$1" 2>/dev/null) || return 1
	[[ $info == *$'\tmod\t'"$MODULE"$'\t'"$VERSION"$'\t'* ]]
}

install_all() {
	local names=(containerd ctr containerd-shim-runc-v2) name missing=0
	for name in "${names[@]}"; do
		built "$name" || missing=1
	done
	((missing)) || return 0

	mkdir -p "$bin"
	# One build at a time: `make test` and a developer's run may overlap.
	exec 9>"$bin/.lock"
	flock 9
	missing=0
	for name in "${names[@]}"; do
		built "$name" || missing=1
	done
	((missing)) || return 0

	echo "containerd24.sh: building containerd $VERSION into $bin (about 2 minutes)" >&2
	# Outside the repo: the main module's go.mod must not steer the build.
	(
		cd /
		GOBIN=$bin GOFLAGS=-buildvcs=false go install -tags "$DAEMON_TAGS" \
			"$MODULE/cmd/containerd@$VERSION" "$MODULE/cmd/ctr@$VERSION"
		GOBIN=$bin GOFLAGS=-buildvcs=false go install -tags "$SHIM_TAGS" \
			"$MODULE/cmd/containerd-shim-runc-v2@$VERSION"
	)
	for name in "${names[@]}"; do
		built "$name" || {
			echo "containerd24.sh: $bin/$name was not built from $MODULE@$VERSION" >&2
			exit 1
		}
	done
}

install_all
if [[ ${1-} == --print ]]; then
	echo "$bin"
fi
