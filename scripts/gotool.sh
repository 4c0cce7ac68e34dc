#!/usr/bin/env bash
# Installs a Go tool at an exact version into .cache/bin, unless that
# version is already there (the version the Go toolchain recorded in the
# binary). Idempotent and quick when done.
#   scripts/gotool.sh versitygw   the S3 server the store tests run against (about 90 s)
#   scripts/gotool.sh nfpm        builds the .deb packages (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
versitygw) module=github.com/versity/versitygw version=v1.8.0 pkg=github.com/versity/versitygw/cmd/versitygw ;;
nfpm) module=github.com/goreleaser/nfpm/v2 version=v2.45.2 pkg=github.com/goreleaser/nfpm/v2/cmd/nfpm ;;
*)
	echo "usage: scripts/gotool.sh versitygw|nfpm" >&2
	exit 2
	;;
esac
BIN_DIR="$PWD/.cache/bin"
bin="$BIN_DIR/$1"

# `versitygw --version` prints no module version for `go install` builds;
# the version recorded in the binary by the Go toolchain does.
have=""
if [ -x "$bin" ]; then
	have=$(go version -m "$bin" 2>/dev/null | awk -v m="$module" '$1 == "mod" && $2 == m { print $3 }')
fi
if [ "$have" != "$version" ]; then
	echo "setup: installing $1@$version into .cache/bin"
	mkdir -p "$BIN_DIR"
	# GOFLAGS from the environment (e.g. -mod=vendor) must not apply to an
	# install outside this module.
	GOFLAGS= GOBIN="$BIN_DIR" go install "$pkg@$version"
fi
