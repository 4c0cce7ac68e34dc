#!/usr/bin/env bash
# Installs the S3 server the receiver/store tests run against (versitygw,
# posix backend) into .cache/bin, unless that exact version is already
# there. Idempotent; the first build takes about 90 s.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSITYGW_VERSION=v1.8.0
BIN_DIR="$PWD/.cache/bin"
bin="$BIN_DIR/versitygw"

# `versitygw --version` prints no module version for `go install` builds;
# the version recorded in the binary by the Go toolchain does.
have=""
if [ -x "$bin" ]; then
	have=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/versity/versitygw" { print $3 }')
fi
if [ "$have" != "$VERSITYGW_VERSION" ]; then
	echo "setup: installing versitygw@$VERSITYGW_VERSION into .cache/bin (about 90 s)"
	mkdir -p "$BIN_DIR"
	# GOFLAGS from the environment (e.g. -mod=vendor) must not apply to an
	# install outside this module.
	GOFLAGS= GOBIN="$BIN_DIR" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
