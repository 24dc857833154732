#!/usr/bin/env bash
# `make demo`: reference inputs (if absent) -> signing key (if absent) -> the pipeline ->
# a device fetching the canary channel over HTTP from a server on 127.0.0.1 and verifying it.
set -euo pipefail
cd "$(dirname "$0")/.."
REFERENCE=${REFERENCE:-reference-data}
OUT=${DEMO_OUT:-demo-output}
CONFIG=${DEMO_CONFIG:-pipelines/configs/demo.yaml}
TFXOPT=.venv/bin/tfxopt

if [ ! -f "$REFERENCE/.complete" ]; then
  "$TFXOPT" example-data "$REFERENCE"
fi
if [ ! -f "$OUT/keys/ota.pem" ]; then
  mkdir -p "$OUT/keys"
  "$TFXOPT" ota-keygen "$OUT/keys/ota.pem"
fi

"$TFXOPT" run --model "$REFERENCE/model" --examples "$REFERENCE/examples" --config "$CONFIG" --output "$OUT"

if [ -f "$OUT/ota/digits/canary/manifest.json" ]; then
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  .venv/bin/python -m http.server --bind 127.0.0.1 --directory "$OUT/ota" "$port" >/dev/null 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo
  echo "Device check: tfxopt ota-check http://127.0.0.1:$port/digits/canary"
  "$TFXOPT" ota-check "http://127.0.0.1:$port/digits/canary" \
    --public-key "$OUT/keys/ota.pem.pub" --device-dir "$OUT/device" --model-name digits
else
  echo "Nothing was pushed to the OTA canary channel (no candidate was blessed): see the summary above."
fi
