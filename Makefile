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

.PHONY: all build install deps unit integration test lint check-imports proto check-proto demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/shim

install: build
	install -m 0755 $(BIN) /usr/local/bin/containerd-shim-lean-v2

deps:
	bash scripts/deps.sh

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

integration: deps build
	LEANSHIM_BIN=$(CURDIR)/bin $(GO) test -count=1 -v -timeout 40m ./integration/

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

test: deps lint check-proto unit integration

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin
