#!/usr/bin/env bash
# Builds the .deb packages with nfpm: uploadbox (the box daemon, cgo for the
# codecs, cross-compiled with Debian's cross compilers) and
# uploadbox-receiver (pure Go), each for amd64, arm64 and armhf (ARMv7).
#
#   scripts/deb.sh [OUTDIR]        packages into OUTDIR (default dist)
#   scripts/deb.sh --print-version the Debian version for $VERSION
#
# Environment: VERSION and COMMIT (default: from git, as in the Makefile)
# are stamped into the binaries; the package version is VERSION made
# Debian-valid (v1.2.3-4-gabc1234 -> 1.2.3+git4.abc1234, abc1234 ->
# 0.0.0~gitabc1234). ARCHS (default "amd64 arm64 armhf") picks the
# architectures, NFPM the nfpm binary (default .cache/bin/nfpm, installed by
# scripts/gotool.sh nfpm when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
ARCHS=${ARCHS:-amd64 arm64 armhf}

# debversion turns a `git describe` string into a Debian version: digits
# first, only [A-Za-z0-9.+~], and "~" for anything that sorts before the
# release (a pre-release tag, or no tag at all).
debversion() {
	local v=${1#v} dirty="" snap="" base
	if [[ $v == *-dirty ]]; then
		v=${v%-dirty}
		dirty="+dirty"
	fi
	if [[ $v =~ ^(.*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		base=${BASH_REMATCH[1]}
		snap="+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
	elif [[ $v =~ ^[0-9a-f]{7,40}$ ]]; then
		base=0.0.0
		snap="~git$v"
	else
		base=$v
	fi
	if [[ ! $base =~ ^[0-9] ]]; then
		base="0.0.0~$base"
	fi
	base=${base/-/\~}
	printf '%s\n' "$base$snap$dirty" | tr -c 'A-Za-z0-9.+~\n' '.'
}

DEBVERSION=$(debversion "$VERSION")
if [ "${1:-}" = "--print-version" ]; then
	echo "$DEBVERSION"
	exit 0
fi
if command -v dpkg >/dev/null && ! dpkg --validate-version "$DEBVERSION" 2>/dev/null; then
	echo "deb.sh: VERSION=$VERSION gives $DEBVERSION, which is not a valid Debian version; set VERSION to a tag like v1.2.3" >&2
	exit 1
fi

OUT=${1:-dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

NFPM=${NFPM:-}
if [ -z "$NFPM" ]; then
	./scripts/gotool.sh nfpm
	NFPM="$PWD/.cache/bin/nfpm"
fi

LDFLAGS="-s -w -X github.com/uploadbox/uploadbox/internal/cli.Version=$VERSION -X github.com/uploadbox/uploadbox/internal/cli.Commit=$COMMIT"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

for arch in $ARCHS; do
	# Go's name for the architecture and Debian's cross compilers for it.
	case $arch in
	amd64) goarch=amd64 goarm="" cc=x86_64-linux-gnu-gcc cxx=x86_64-linux-gnu-g++ ;;
	arm64) goarch=arm64 goarm="" cc=aarch64-linux-gnu-gcc cxx=aarch64-linux-gnu-g++ ;;
	armhf) goarch=arm goarm=7 cc=arm-linux-gnueabihf-gcc cxx=arm-linux-gnueabihf-g++ ;;
	*)
		echo "deb.sh: unknown architecture $arch in ARCHS; use amd64, arm64 or armhf" >&2
		exit 1
		;;
	esac
	if ! command -v "$cc" >/dev/null || ! command -v "$cxx" >/dev/null; then
		echo "deb.sh: $cc or $cxx missing; install the Debian cross compilers (see .ci/run)" >&2
		exit 1
	fi
	bin="$STAGE/$arch"
	mkdir -p "$bin"
	echo "deb.sh: building $arch"
	env CGO_ENABLED=1 GOOS=linux GOARCH=$goarch GOARM=$goarm CC=$cc CXX=$cxx \
		go build -trimpath -ldflags "$LDFLAGS" -o "$bin/uploadbox" ./cmd/uploadbox
	env CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
		go build -trimpath -ldflags "$LDFLAGS" -o "$bin/uploadbox-receiver" ./cmd/uploadbox-receiver

	for pkg in uploadbox uploadbox-receiver; do
		target="$OUT/${pkg}_${DEBVERSION}_${arch}.deb"
		# The nfpm recipes read DEB_ARCH, DEB_VERSION and BIN_DIR.
		# nfpm reports errors on stdout, between lines of progress.
		if ! log=$(DEB_ARCH=$arch DEB_VERSION=$DEBVERSION BIN_DIR=$bin \
			"$NFPM" package --packager deb --config "packaging/nfpm-$pkg.yaml" --target "$target" 2>&1); then
			echo "deb.sh: nfpm failed for $pkg $arch:" >&2
			echo "$log" >&2
			exit 1
		fi
		echo "$target"
	done
done
