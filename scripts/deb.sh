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
#
# Besides the binaries it makes what the packages ship around them: the
# manual pages (`man`, a hidden command of each binary) gzipped, the bash
# and zsh completions (cobra's `completion`), the changelog, the licences
# of the Go modules linked into each binary, and the box's
# Depends, computed from the symbol versions its binary needs (shlibdeps).
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

# shlibdeps prints the Depends entries a dynamically linked binary needs,
# as dpkg-shlibdeps would from the libraries' symbols files: libc6 at least
# the newest GLIBC_ version it asks for, libgcc-s1 the newest GCC_,
# libstdc++6 the package version that brought the newest GLIBCXX_/CXXABI_
# node (from the build machine's libstdc++6 symbols file).
shlibdeps() {
	local bin=$1 needed needs lib pkg node ver best entries=()
	needed=$(readelf -d --wide "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
	needs=$(readelf -V --wide "$bin" | awk '/File:/ { for (i = 1; i < NF; i++) if ($i == "File:") lib = $(i + 1) } /Name:/ && lib != "" { for (i = 1; i < NF; i++) if ($i == "Name:") print lib, $(i + 1) }')
	for pkg in libc6 libgcc-s1 libstdc++6; do
		best=""
		for lib in $needed; do
			case $lib in
			libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*) [ $pkg = libc6 ] || continue ;;
			libgcc_s.so.1) [ $pkg = libgcc-s1 ] || continue ;;
			libstdc++.so.6) [ $pkg = libstdc++6 ] || continue ;;
			*)
				echo "deb.sh: $bin needs $lib, which deb.sh does not know the Debian package of; add it to shlibdeps" >&2
				return 1
				;;
			esac
			[ -n "$best" ] || best=0
			for node in $(awk -v l="$lib" '$1 == l { print $2 }' <<<"$needs"); do
				case $pkg:$node in
				libc6:GLIBC_[0-9]* | libgcc-s1:GCC_[0-9]*) ver=${node#*_} ;;
				libstdc++6:GLIBCXX_[0-9]* | libstdc++6:CXXABI_[0-9]*)
					ver=$(awk -v s="$node@$node" '$1 == s { print $2; exit }' "$(dpkg-query --control-path libstdc++6 symbols)")
					if [ -z "$ver" ]; then
						echo "deb.sh: $bin needs $node of $lib, which this machine's libstdc++6 symbols file does not list; build with an older g++ or update libstdc++6" >&2
						return 1
					fi
					;;
				*) continue ;;
				esac
				if dpkg --compare-versions "$ver" gt "$best"; then
					best=$ver
				fi
			done
		done
		case $best in
		"") ;;
		0) entries+=("$pkg") ;;
		*) entries+=("$pkg (>= $best)") ;;
		esac
	done
	local IFS=,
	echo "${entries[*]}" | sed 's/,/, /g'
}

# The changelog of a native package: one entry for this build, dated by the
# commit (reproducible), pointing to the git history for what changed.
changelog() {
	local pkg=$1 when
	when=$(date -u -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
	printf '%s (%s) unstable; urgency=medium\n\n  * Built from commit %s; the git history lists the changes.\n\n -- %s  %s\n' \
		"$pkg" "$DEBVERSION" "$COMMIT" "$MAINTAINER" "$when"
}
MAINTAINER=$(sed -n 's/^maintainer: //p' packaging/nfpm-uploadbox.yaml)

# third_party prints the licence files (LICENSE, NOTICE, PATENTS, …) of Go
# and of every module linked into the binary $1, as its build information
# lists them, each under a line naming the module and version. A module
# without one stops the build.
third_party() {
	local bin=$1 mod ver dir f found
	printf 'Licences of Go and of the Go modules linked into /usr/bin/%s\n' "$(basename "$bin")"
	printf '(its build information: go version -m /usr/bin/%s).\n' "$(basename "$bin")"
	{
		echo "go $(go env GOVERSION) $(go env GOROOT)"
		# The binary was built from this module: go list -m finds the
		# versions its build information names.
		go list -m -f '{{.Path}} {{.Version}} {{.Dir}}' $(go version -m "$bin" | awk '$1 == "dep" { print $2 }')
	} | while read -r mod ver dir; do
		found=""
		for f in "$dir"/LICEN[CS]E* "$dir"/COPYING* "$dir"/NOTICE* "$dir"/PATENTS*; do
			[ -f "$f" ] || continue
			found=1
			printf '\n==== %s %s: %s\n\n' "$mod" "$ver" "$(basename "$f")"
			cat "$f"
		done
		if [ -z "$found" ]; then
			echo "deb.sh: module $mod $ver has no licence file in $dir; add its licence to packaging/copyright" >&2
			return 1
		fi
	done
}

# host runs a binary built for $1 here: natively or under qemu.
host() {
	local arch=$1
	shift
	case $arch in
	"$(dpkg --print-architecture)") "$@" ;;
	arm64) qemu-aarch64-static -L /usr/aarch64-linux-gnu "$@" ;;
	armhf) qemu-arm-static -L /usr/arm-linux-gnueabihf "$@" ;;
	*) "$@" ;;
	esac
}

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

	# What does not depend on the architecture is made once, by the
	# first architecture's binaries: manual pages, completions, changelogs,
	# licences (every architecture links the same modules).
	docs="$STAGE/docs"
	if [ ! -d "$docs" ]; then
		for pkg in uploadbox uploadbox-receiver; do
			mkdir -p "$docs/$pkg/man" "$docs/$pkg/completion"
			host "$arch" "$bin/$pkg" man "$docs/$pkg/man" >/dev/null
			gzip -9n "$docs/$pkg/man"/*.1
			host "$arch" "$bin/$pkg" completion bash >"$docs/$pkg/completion/$pkg"
			host "$arch" "$bin/$pkg" completion zsh >"$docs/$pkg/completion/_$pkg"
			changelog "$pkg" | gzip -9n >"$docs/$pkg/changelog.gz"
			third_party "$bin/$pkg" | gzip -9n >"$docs/$pkg/third-party-licenses.gz"
		done
	fi
	# Only the box links C libraries (the codecs); the receiver is static.
	depends=$(shlibdeps "$bin/uploadbox")

	for pkg in uploadbox uploadbox-receiver; do
		target="$OUT/${pkg}_${DEBVERSION}_${arch}.deb"
		# The nfpm recipes read DEB_ARCH, DEB_VERSION, BIN_DIR, DOC_DIR and
		# SHLIB_DEPENDS. nfpm reports errors on stdout, between lines of
		# progress.
		if ! log=$(DEB_ARCH=$arch DEB_VERSION=$DEBVERSION BIN_DIR=$bin DOC_DIR=$docs/$pkg SHLIB_DEPENDS=$depends \
			"$NFPM" package --packager deb --config "packaging/nfpm-$pkg.yaml" --target "$target" 2>&1); then
			echo "deb.sh: nfpm failed for $pkg $arch:" >&2
			echo "$log" >&2
			exit 1
		fi
		echo "$target"
	done
done
