#!/usr/bin/env bash
# The uploadbox demo: what `make demo` runs. It grows with the project.
# Keys; a sample sealed on the "box", checked keylessly and opened on the
# "cloud" side; then a receiver on 127.0.0.1, an enrolled box running the
# daemon with the test source, a 20 s session, background upload with
# receipts and wipe, and the export as lesson.mp4 in the current directory,
# checked with ffprobe. Leaves no process running.
set -euo pipefail
bin=${1:-bin}
bin=$(cd "$bin" && pwd)
out=$(pwd)
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

step "box: start the daemon (test source: pattern + tone; control socket, metrics on localhost)"
cat >box.yaml <<YAML
state_dir: $work/box
runtime_dir: $work/run
capture:
  source: test
  width: 1280
  height: 720
  fps: 30
  bitrate: 2500k
recording:
  segment: 4s
spool:
  dir: $work/spool
upload:
  retry_max: 5s
metrics:
  listen: ""
audit:
  path: $work/box-audit.jsonl
YAML
"$bin/uploadbox" run --config box.yaml 2>daemon.log &
daemon=$!
trap 'kill $daemon $server 2>/dev/null; wait $daemon $server 2>/dev/null; rm -rf "$work"' EXIT
ctl() { "$bin/uploadbox" "$@" --socket "$work/run/control.sock"; }
for _ in $(seq 100); do ctl session status >/dev/null 2>&1 && break; sleep 0.1; done
ctl session status

step "box: nothing is recorded until a session is started on purpose; start one for 20 s"
echo "spool before the session: $(ls spool | grep -c ubx || true) segment files"
ctl session start --for 20s
sleep 10
echo "half way: $(ctl queue)"
echo "on the box, only ciphertext: none of the spool files holds an MP4 box name: \
$(grep -lE 'ftyp|moof|mdat' spool/*.ubx* >/dev/null 2>&1 && echo NO || echo yes)"
for _ in $(seq 300); do ctl session status --json | grep -q '"active": true' || break; sleep 0.1; done
ctl session status

step "box: the daemon uploads in the background; wait until every segment is committed and wiped"
for _ in $(seq 600); do ctl queue --json | grep -q '"count": 0' && break; sleep 0.1; done
ctl queue
status=$(ctl session status --json)
queue=$(ctl queue --json)
left=$(ls spool | grep -c ubx || true)
echo "left on the box: $left segment files (only the index, spool.db, remains)"

step "cloud: the stored recording, its chain checked, decrypted and exported as one MP4"
"$bin/uploadbox-receiver" recordings list --data rdata
id=$("$bin/uploadbox-receiver" recordings list --data rdata --json | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
"$bin/uploadbox-receiver" recordings export "$id" -o "$out/lesson.mp4" --identity org.key --data rdata
probe=$(ffprobe -v error -show_entries format=duration:stream=codec_type,codec_name,width,height -of compact=p=0 "$out/lesson.mp4")
echo "$probe"
"$bin/uploadbox-receiver" audit verify --data rdata

step "stop the daemon (SIGTERM) and the receiver"
kill -TERM $daemon; wait $daemon || true
kill -TERM $server; wait $server || true
trap 'rm -rf "$work"' EXIT

segments=$(echo "$status" | sed -n 's/.*"segments": \([0-9]*\).*/\1/p')
bytes=$(echo "$status" | sed -n 's/.*"bytes": \([0-9]*\).*/\1/p')
wiped=$(echo "$queue" | sed -n 's/.*"wiped": \([0-9]*\).*/\1/p')
stored=$("$bin/uploadbox-receiver" recordings list --data rdata --json | sed -n 's/.*"segments": \([0-9]*\).*/\1/p' | head -1)
duration=$(echo "$probe" | sed -n 's/^duration=//p')
streams=$(echo "$probe" | grep codec_name | sed 's/|/ /g' | tr '\n' ';')
cat <<SUMMARY

== summary
session:   20 s from the test source, recording $id
segments:  $segments sealed on the box, $bytes bytes of ciphertext
receipts:  $stored segments committed by the receiver, each with a signed receipt checked by the box
wiped:     $wiped local files wiped after their receipt; $left segment files left on the box
export:    $out/lesson.mp4, $duration s; streams: $streams
SUMMARY
[ "$left" -eq 0 ] && [ "$wiped" = "$segments" ] && [ "$stored" = "$segments" ]
pgrep -f "$work" >/dev/null && { echo "processes left running" >&2; exit 1; }
printf '\ndemo OK\n'
