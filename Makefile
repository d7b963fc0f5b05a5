# leanshim — containerd-shim-lean-v2
#
#   make demo    run a real container through leanshim under a private containerd
#   make test    everything CI runs: import rules, proto check, unit and integration tests
#
# Both install what they need (apt packages via scripts/deps.sh) when missing.

SHELL   := /bin/bash
GO      ?= go
BIN     := bin/containerd-shim-lean-v2
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Everything but the black-box suite, which needs root and a containerd.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v /integration)

.PHONY: all build install deps unit integration test lint check-imports proto check-proto demo clean fuzz fuzz-short containerd24 soak

all: build

# The shim is built with Go's previous garbage collector: Go 1.26's default
# one ("Green Tea") left an idle shim about 100 KiB larger (bench/RESULTS.md,
# "Build"). Empty once a Go release no longer knows the experiment.
SHIM_GOEXPERIMENT := $(shell GOEXPERIMENT=nogreenteagc $(GO) env GOEXPERIMENT 2>/dev/null)

build:
	GOEXPERIMENT=$(SHIM_GOEXPERIMENT) CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/shim

install: build
	install -m 0755 $(BIN) /usr/local/bin/containerd-shim-lean-v2

deps:
	bash scripts/deps.sh

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

integration: deps build containerd24
	LEANSHIM_BIN=$(CURDIR)/bin LEANSHIM_CONTAINERD24=$(CONTAINERD24_BIN) $(GO) test -count=1 -v -timeout 40m ./integration/

# containerd, ctr and containerd-shim-runc-v2 of containerd 2.4.2, built once
# with go install into the git-ignored .cache (about 2 minutes), for the
# integration tests that run leanshim under containerd 2.x.
CONTAINERD24_BIN := $(CURDIR)/.cache/containerd-2.4.2/bin
containerd24:
	bash scripts/containerd24.sh

# crictl (sigs.k8s.io/cri-tools v1.37.0), built once with go install into the
# git-ignored .cache/bin (about 2 minutes), for the CRI integration test
# (integration/cri_test.go).
.PHONY: crictl
crictl:
	bash scripts/crictl.sh
integration: crictl

# nerdctl v2.0.5 (github.com/containerd/nerdctl/v2), built once from the Go
# module proxy into the git-ignored .cache/bin, for the nerdctl integration
# test (integration/nerdctl_test.go). Not `go install`: see the script.
.PHONY: nerdctl
nerdctl:
	bash scripts/nerdctl.sh
integration: nerdctl

lint: check-imports
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

check-imports:
	bash scripts/check-imports.sh

proto:
	bash scripts/proto.sh

check-proto:
	bash scripts/proto.sh check

# Fuzz targets: a few seconds each in `make test`, longer with `make fuzz`.
FUZZ_TIME ?= 60s
FUZZ_TARGETS = ./task:FuzzDecodeOptions ./task:FuzzValidID ./task:FuzzTaskService ./cmd/shim:FuzzReadStartParams

fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} ($(FUZZ_TIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZ_TIME) "$${t%%:*}" || exit 1; \
	done

# A count, not a time: with -fuzztime 5s a corpus whose baseline run takes
# longer than 5 s (a loaded machine, a big cached corpus) fails with "context
# deadline exceeded" without having found anything.
fuzz-short:
	$(MAKE) fuzz FUZZ_TIME=200x

test: deps lint check-proto unit fuzz-short integration

# The churn test at the issue's full scale: 10,000 execs and 1,000 container
# cycles in one shim (about 15 minutes). `make test` runs it at 440 and 45.
soak: deps build
	LEANSHIM_SOAK=1 LEANSHIM_BIN=$(CURDIR)/bin $(GO) test -count=1 -v -timeout 90m -run 'TestChurnLeavesNoLeaks' ./integration/

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin

# leanshim against containerd-shim-runc-v2 under a private containerd (issue 7);
# writes bench/RESULTS.md. Not part of `test`: about 20 minutes on 2 cores.
# CONTAINERD=2.4 uses the 2.4.2 build of `make containerd24`; BENCH_FLAGS adds
# flags (`cd bench && go run . -h` lists them). bench/ is its own Go module.
.PHONY: bench bench-smoke
bench: deps
	if [ "$(CONTAINERD)" = 2.4 ]; then bash scripts/containerd24.sh; fi
	cd bench && CONTAINERD=$(CONTAINERD) $(GO) run . $(BENCH_FLAGS)

# Every bench phase on both shims, scaled down (under 2 minutes); prints only.
bench-smoke: deps
	if [ "$(CONTAINERD)" = 2.4 ]; then bash scripts/containerd24.sh; fi
	cd bench && $(GO) vet . && $(GO) test -count=1 . && CONTAINERD=$(CONTAINERD) $(GO) run . -smoke $(BENCH_FLAGS)

# Pods without pause containers (issue 15): leanshim's shim sandbox, leanshim
# with a pause container and runc-v2 with a pause container, under containerd
# 2.4.2's CRI plugin driven with crictl; writes bench/RESULTS-pods.md (about
# 30 minutes on 2 cores). bench-pods-smoke: the same scaled down, printed only.
.PHONY: bench-pods bench-pods-smoke
bench-pods: deps containerd24 crictl
	cd bench && $(GO) run . pods $(BENCH_FLAGS)

bench-pods-smoke: deps containerd24 crictl
	cd bench && $(GO) vet . && $(GO) test -count=1 . && $(GO) run . pods -smoke $(BENCH_FLAGS)
