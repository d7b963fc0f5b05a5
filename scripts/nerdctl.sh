#!/usr/bin/env bash
# nerdctl.sh installs nerdctl (github.com/containerd/nerdctl/v2) into the
# git-ignored .cache/bin, for the integration test that drives leanshim through
# nerdctl under a private containerd 2.4.2 (integration/nerdctl_test.go).
# It builds it once from the Go module proxy and is silent afterwards.
#
#   bash scripts/nerdctl.sh          install if missing; print nothing
#   bash scripts/nerdctl.sh --print  install if missing; print the binary's path
#
# The integration suite finds it at .cache/bin/nerdctl (or $LEANSHIM_NERDCTL).
#
# Why v2.0.5 and not the newest: v2.4.x needs a github.com/moby/moby/v2 beta
# that the module proxy refuses to serve. Why not `go install`: v2.0.5's go.mod
# has a `replace` line, which `go install pkg@version` refuses. So: download
# the module source, copy it somewhere writable (the module cache is
# read-only) and `go build ./cmd/nerdctl` there, as its own main module.
set -euo pipefail

readonly VERSION=v2.0.5
readonly MODULE=github.com/containerd/nerdctl/v2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly bin=$repo/.cache/bin
readonly nerdctl=$bin/nerdctl

# built succeeds if $nerdctl exists and reports $VERSION (the build sets it
# with -X, as nerdctl's own Makefile does; built as the main module, Go's
# build info would only say "(devel)").
built() {
	local out
	[[ -x $nerdctl ]] || return 1
	out=$("$nerdctl" --version 2>/dev/null) || return 1
	[[ $out == "nerdctl version ${VERSION#v}" ]]
}

install_nerdctl() {
	built && return 0
	mkdir -p "$bin"
	# One build at a time: `make test` and a developer's run may overlap.
	exec 9>"$bin/.nerdctl.lock"
	flock 9
	built && return 0

	echo "nerdctl.sh: building nerdctl $VERSION into $bin" >&2
	local dir src tmp
	# Outside the repo: the main module's go.mod must not steer the download.
	dir=$(cd / && go mod download -json "$MODULE@$VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[[ -n $dir && -d $dir ]] || {
		echo "nerdctl.sh: go mod download $MODULE@$VERSION gave no source directory" >&2
		exit 1
	}
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $tmp now: it is local.
	trap "rm -rf '$tmp'" EXIT
	src=$tmp/nerdctl
	cp -r "$dir" "$src"
	chmod -R u+w "$src"
	(
		cd "$src"
		CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
			-ldflags "-s -w -X $MODULE/pkg/version.Version=$VERSION -X $MODULE/pkg/version.Revision=module-proxy" \
			-o "$nerdctl.tmp" ./cmd/nerdctl
	)
	# Renamed into place only once whole: a build cut short leaves no binary
	# that `built` would take for a good one.
	mv "$nerdctl.tmp" "$nerdctl"
	built || {
		echo "nerdctl.sh: $nerdctl does not report version $VERSION" >&2
		exit 1
	}
}

install_nerdctl
if [[ ${1-} == --print ]]; then
	echo "$nerdctl"
fi
