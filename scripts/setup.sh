#!/usr/bin/env bash
# Installs what `make test` needs and is missing, so that it passes on a
# fresh Debian 12 machine: g++ (cgo codecs), openssl (TLS version checks), ffmpeg (ffprobe checks every
# exported recording), chromium (plays exports and, later, the live view),
# playwright-core from npm (drives chromium) into .cache/npm, and the
# versitygw S3 server into .cache/bin; for the .deb packages the arm64 and
# armhf cross compilers, qemu-user-static, lintian and nfpm (into .cache/bin);
# PostgreSQL's server binaries (internal/pgtest); OpenCV's Python binding, its
# Haar cascades and scikit-image's photographs (the face detector test).
# `setup.sh --demo` installs only what `make demo` needs (g++, ffmpeg).
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
	[ $# -gt 0 ] || return 0
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	echo "setup: installing $*"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v ffprobe >/dev/null || missing+=(ffmpeg)
if [ "${1:-}" = "--demo" ]; then
	install "${missing[@]}"
	exit 0
fi
command -v openssl >/dev/null || missing+=(openssl)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs npm)
# the cross-network tests make network namespaces (internal/netns).
command -v ip >/dev/null || missing+=(iproute2)
# .deb packages (packaging/): cross compilers and qemu to run the arm builds.
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-g++ >/dev/null || missing+=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
# PostgreSQL for the receiver's shared-state tests (internal/pgtest runs its
# own initdb in a temporary directory; the package's own cluster is not used).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# the anonymisation proof (internal/e2e TestAnonymisedFaces): Debian's python3
# with cv2, the frontal face cascade, and the astronaut photograph.
/usr/bin/python3 -c 'import cv2' >/dev/null 2>&1 || missing+=(python3-opencv)
[ -f /usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml ] || missing+=(opencv-data)
[ -f /usr/lib/python3/dist-packages/skimage/data/astronaut.png ] || missing+=(python3-skimage)
# the packaging test runs lintian on every .deb.
command -v lintian >/dev/null || missing+=(lintian)
# talk-back's playback test plays through ALSA's "null" device (agent/talkback).
ls /usr/share/alsa/alsa.conf >/dev/null 2>&1 || missing+=(libasound2)
install "${missing[@]}"

PLAYWRIGHT_VERSION=1.64.1
if [ "$(node -p "try{require('./.cache/npm/node_modules/playwright-core/package.json').version}catch(e){''}" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
	echo "setup: installing playwright-core@$PLAYWRIGHT_VERSION into .cache/npm"
	mkdir -p .cache/npm
	npm install --silent --no-audit --no-fund --prefix .cache/npm "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

TUS_JS_VERSION=4.3.1
if [ "$(node -p "try{require('./.cache/npm/node_modules/tus-js-client/package.json').version}catch(e){''}" 2>/dev/null)" != "$TUS_JS_VERSION" ]; then
	echo "setup: installing tus-js-client@$TUS_JS_VERSION into .cache/npm"
	npm install --silent --no-audit --no-fund --prefix .cache/npm "tus-js-client@$TUS_JS_VERSION" >/dev/null
fi

# The S3 server the receiver/store tests use (versitygw, built with go install).
./scripts/gotool.sh versitygw

# nfpm builds the .deb packages (make deb, packaging/).
./scripts/gotool.sh nfpm
