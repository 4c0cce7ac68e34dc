# uploadbox build, test and demo entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/uploadbox/uploadbox/internal/cli.Version=$(VERSION) -X github.com/uploadbox/uploadbox/internal/cli.Commit=$(COMMIT)
BIN := bin
VECTORS ?= $(abspath ../shared/vectors)
export UPLOADBOX_VECTORS := $(VECTORS)

.PHONY: all setup build cross test test-postgres test-short test-arm64 bench soak demo fuzz vet clean deb

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/uploadbox ./cmd/uploadbox
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/uploadbox-receiver ./cmd/uploadbox-receiver

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

# Installs what the tests need and is missing (apt: g++, ffmpeg, chromium;
# npm: playwright-core into .cache/npm). Idempotent and quick when done.
setup:
	./scripts/setup.sh

# Compiles the box for arm64 and armhf before the suite runs, so that the
# packaging test (which builds every .deb) only links: the codecs' cgo
# build for each architecture is slow the first time.
cross:
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ \
		$(GO) build -trimpath -o $(BIN)/cross/uploadbox-arm64 ./cmd/uploadbox
	CGO_ENABLED=1 GOOS=linux GOARCH=arm GOARM=7 CC=arm-linux-gnueabihf-gcc CXX=arm-linux-gnueabihf-g++ \
		$(GO) build -trimpath -o $(BIN)/cross/uploadbox-armhf ./cmd/uploadbox

# The full suite with the race detector, then the receiver's packages again
# with their state in PostgreSQL.
test: setup vet cross
	$(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) test-postgres

# The receiver's packages whose tests open the state through kvtest, with a
# real PostgreSQL (internal/pgtest) instead of bbolt.
POSTGRES_PKGS := ./receiver ./receiver/devices ./receiver/viewers ./receiver/lockout
test-postgres:
	UPLOADBOX_TEST_DATABASE=postgres $(GO) test -race -count=1 -timeout 10m $(POSTGRES_PKGS)

test-short:
	$(GO) test -short -count=1 ./...

# Cross-compile the crypto tests (and talk-back's, whose Opus decoder is the
# arm64 libopus mediadevices ships) for arm64 and run them under qemu, once
# with the hardware AES/PMULL/SHA paths and once without them, as on a Pi 4.
ARM64_CC ?= aarch64-linux-gnu-gcc
ARM64_CXX ?= aarch64-linux-gnu-g++
test-arm64:
	@mkdir -p $(BIN)/arm64
	@for p in $$($(GO) list ./crypto/... ./agent/talkback); do \
		name=$$(echo $$p | tr / _); \
		CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) CXX=$(ARM64_CXX) \
			$(GO) test -c -o $(BIN)/arm64/$$name.test $$p || exit 1; \
	done
	@for t in $(BIN)/arm64/*.test; do \
		pkgdir=$$($(GO) list -f '{{.Dir}}' $$(basename $$t .test | tr _ /)); \
		for godebug in "" "cpu.aes=off,cpu.pmull=off,cpu.sha2=off"; do \
			echo "== $$(basename $$t) GODEBUG=$$godebug"; \
			(cd $$pkgdir && GODEBUG=$$godebug qemu-aarch64-static -L /usr/aarch64-linux-gnu $(abspath $$t) -test.short -test.count=1) || exit 1; \
		done; \
	done

# .deb packages for amd64, arm64 and armhf (box and receiver) in dist/,
# built with nfpm and Debian's cross compilers (scripts/deb.sh).
deb:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' ./scripts/deb.sh dist

# One comparison: make bench BENCH='-only talkback' (see internal/bench -h).
bench: build
	$(GO) run ./internal/bench -bin $(BIN) $(BENCH)

# The chaos run against the real binaries (README, "Soak"): about 10-15
# minutes, needs root (it mounts the spool's filesystem) and ffprobe; not
# part of `make test`. More rounds: make soak SOAKFLAGS='-rounds 40 -time 30m'.
soak: build
	$(GO) run ./internal/soak -bin $(BIN) $(SOAKFLAGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseHeader -fuzztime 60s ./crypto
	$(GO) test -run '^$$' -fuzz FuzzReader -fuzztime 60s ./crypto

demo:
	./scripts/setup.sh --demo
	$(MAKE) build
	./scripts/demo.sh $(BIN)

clean:
	rm -rf $(BIN)
