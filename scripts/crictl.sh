#!/usr/bin/env bash
# crictl.sh installs crictl (the CRI command-line client, sigs.k8s.io/cri-tools)
# into the git-ignored .cache/bin, for the integration test that runs pods
# through leanshim under containerd's CRI plugin (integration/cri_test.go).
# It builds it once with `go install` from the Go module proxy (about 2 minutes
# on 2 cores) and is silent afterwards.
#
#   bash scripts/crictl.sh          install if missing; print nothing
#   bash scripts/crictl.sh --print  install if missing; print the binary's path
#
# The integration suite finds it at .cache/bin/crictl (or $LEANSHIM_CRICTL).
set -euo pipefail

readonly VERSION=v1.37.0
readonly MODULE=sigs.k8s.io/cri-tools

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly bin=$repo/.cache/bin
readonly crictl=$bin/crictl

# built succeeds if $crictl exists and was built from $MODULE@$VERSION
# (`go install` leaves crictl's own version string "unknown", so ask Go).
built() {
	local info
	[[ -x $crictl ]] || return 1
	info=$(go version -m "$crictl" 2>/dev/null) || return 1
	[[ $info == *$'\tmod\t'"$MODULE"$'\t'"$VERSION"$'\t'* ]]
}

install_crictl() {
	built && return 0
	mkdir -p "$bin"
	# One build at a time: `make test` and a developer's run may overlap.
	exec 9>"$bin/.crictl.lock"
	flock 9
	built && return 0

	echo "crictl.sh: building crictl $VERSION into $bin (about 2 minutes)" >&2
	# Outside the repo: the main module's go.mod must not steer the build.
	(
		cd /
		GOBIN=$bin GOFLAGS=-buildvcs=false go install "$MODULE/cmd/crictl@$VERSION"
	)
	built || {
		echo "crictl.sh: $crictl was not built from $MODULE@$VERSION" >&2
		exit 1
	}
}

install_crictl
if [[ ${1-} == --print ]]; then
	echo "$crictl"
fi
