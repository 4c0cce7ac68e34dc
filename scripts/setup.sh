#!/usr/bin/env bash
# Installs what `make test` needs and is missing, so that it passes on a
# fresh Debian 12 machine: g++ (cgo codecs), openssl (TLS version checks), ffmpeg (ffprobe checks every
# exported recording), chromium (plays exports and, later, the live view),
# playwright-core from npm (drives chromium) into .cache/npm, and the
# versitygw S3 server into .cache/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v openssl >/dev/null || missing+=(openssl)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	echo "setup: installing ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

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
./scripts/versitygw.sh
