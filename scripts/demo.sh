#!/usr/bin/env bash
# The uploadbox demo: what `make demo` runs. It grows with the project.
# Today: keys; a sample sealed on the "box", checked keylessly and opened on
# the "cloud" side; then a receiver, an enrolled box recording 15 s from the
# test source, upload with receipts and wipe, and the export as one MP4.
set -euo pipefail
bin=${1:-bin}
bin=$(cd "$bin" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/uploadbox-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n== %s\n' "$*"; }

step "cloud: generate the organisation key pair (X-Wing: ML-KEM-768 + X25519)"
"$bin/uploadbox-receiver" keys generate --out org.key --public-out org.pub >/dev/null
echo "org.key  $(stat -c %a org.key)  private, stays with the organisation"
echo "org.pub  $(stat -c %a org.pub)  $(cut -c1-40 org.pub)…"

step "box: generate the device signing key"
"$bin/uploadbox" keys device --out dev.key --public-out dev.pub >/dev/null
echo "dev.key  $(stat -c %a dev.key)  private, never leaves the box"
echo "dev.pub  $(cat dev.pub)"

step "box: seal a 5 MiB sample (stands in for a recording segment)"
head -c $((5 << 20)) /dev/urandom > sample.bin
"$bin/uploadbox" seal --recipients-file org.pub --device-key dev.key --codec video/mp4 -o sample.ubx sample.bin
echo "sample.bin $(stat -c %s sample.bin) bytes -> sample.ubx $(stat -c %s sample.ubx) bytes"

step "cloud: verify without any decryption key (signature, structure, chain fields)"
"$bin/uploadbox-receiver" verify --device-pub dev.pub sample.ubx

step "cloud: open with the organisation key"
"$bin/uploadbox-receiver" open --identity org.key -o opened.bin sample.ubx
cmp sample.bin opened.bin && echo "opened.bin is identical to sample.bin"

step "a power cut: the box lost the end of the file"
head -c 3000000 sample.ubx > cut.ubx
set +e
"$bin/uploadbox-receiver" open --identity org.key -o cut.bin cut.ubx 2>/dev/null; rc=$?
set -e
echo "exit $rc (3 = TRUNCATED): $(stat -c %s cut.bin) authentic bytes recovered"
[ "$rc" -eq 3 ] && cmp -n "$(stat -c %s cut.bin)" sample.bin cut.bin && echo "the recovered prefix matches the original"

step "tampering: one flipped bit"
cp sample.ubx bad.ubx
printf '\x01' | dd of=bad.ubx bs=1 seek=100000 conv=notrunc status=none
set +e
"$bin/uploadbox-receiver" open --identity org.key -o bad.bin bad.ubx 2>&1; rc=$?
set -e
echo "exit $rc (4 = CORRUPT); bad.bin written: $([ -e bad.bin ] && echo yes || echo no)"
[ "$rc" -eq 4 ] && [ ! -e bad.bin ]

step "cloud: start the receiver (TLS only, on 127.0.0.1, a fresh data directory)"
"$bin/uploadbox-receiver" serve --data rdata --listen 127.0.0.1:0 --recipients-file org.pub >serve.out 2>serve.err &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^listening on' serve.out 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' serve.out)
[ -n "$addr" ] || { cat serve.err >&2; exit 1; }
echo "listening on $addr"

step "cloud: add the box; box: enroll with the one-time token, pinning the CA"
"$bin/uploadbox-receiver" devices add room-101 --data rdata --json >add.json
token=$(sed -n 's/.*"token": "\(.*\)".*/\1/p' add.json)
fingerprint=$(sed -n 's/.*"ca_fingerprint": "\(.*\)".*/\1/p' add.json)
"$bin/uploadbox" enroll --receiver "https://$addr" --token "$token" --ca-fingerprint "$fingerprint" --state box

step "box: record 15 s from the test source (pattern + tone) into sealed 5 s segments"
mkdir spool
"$bin/uploadbox" record --source test --size 1280x720 --fps 30 --bitrate 2500k \
	--duration 15s --segment 5s --state box --out spool 2>/dev/null
echo "on the box, only ciphertext: $(ls spool | wc -l) files, none holds an MP4 box name: \
$(grep -lE 'ftyp|moof|mdat' spool/* >/dev/null && echo NO || echo yes)"

step "box: upload; each segment is committed, its signed receipt checked, then wiped"
"$bin/uploadbox" upload --state box --spool spool 2>/dev/null
echo "left on the box: $(ls spool)"

step "cloud: the stored recording, its chain checked, decrypted and exported as one MP4"
"$bin/uploadbox-receiver" recordings list --data rdata
id=$("$bin/uploadbox-receiver" recordings list --data rdata --json | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
"$bin/uploadbox-receiver" recordings export "$id" -o lesson.mp4 --identity org.key --data rdata
if command -v ffprobe >/dev/null; then
	echo "ffprobe says:"
	ffprobe -v error -show_entries format=duration:stream=codec_type,codec_name,width,height,duration -of compact=p=0 lesson.mp4
else
	echo "(install ffmpeg to see ffprobe's view of lesson.mp4)"
fi
"$bin/uploadbox-receiver" audit verify --data rdata

printf '\ndemo OK\n'
