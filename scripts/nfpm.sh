#!/usr/bin/env bash
# Installs nfpm, which builds the .deb packages (`make deb`), into
# .cache/bin, unless that exact version is already there. Idempotent; the
# first build takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=v2.45.2
BIN_DIR="$PWD/.cache/bin"
bin="$BIN_DIR/nfpm"

# The version recorded in the binary by the Go toolchain, as for versitygw.
have=""
if [ -x "$bin" ]; then
	have=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/goreleaser/nfpm/v2" { print $3 }')
fi
if [ "$have" != "$NFPM_VERSION" ]; then
	echo "setup: installing nfpm@$NFPM_VERSION into .cache/bin (about a minute)"
	mkdir -p "$BIN_DIR"
	# GOFLAGS from the environment (e.g. -mod=vendor) must not apply to an
	# install outside this module.
	GOFLAGS= GOBIN="$BIN_DIR" go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi
