#!/usr/bin/env bash
# `make demo`: reference inputs (if absent) -> signing key (if absent) -> the pipeline ->
# a device fetching the canary channel over HTTP from a server on 127.0.0.1 and verifying it
# (tfxopt ota-check), then the same release checked with no code of ours: python-tuf's stock
# client and `model_signing verify` (docs/ota.md).
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

if [ -f "$OUT/ota/metadata/timestamp.json" ]; then
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
  echo
  echo "Stock python-tuf client (tuf.ngclient.Updater, the published root.json as trust anchor):"
  .venv/bin/python - "$OUT" "http://127.0.0.1:$port" <<'PY'
import os, shutil, sys, tempfile
from tuf.ngclient import Updater
out, url = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp()
shutil.copy(os.path.join(out, "ota", "metadata", "1.root.json"), os.path.join(work, "root.json"))
updater = Updater(work, f"{url}/metadata/", work, f"{url}/")
updater.refresh()
info = updater.get_targetinfo("digits/canary/model.tflite")
path = updater.download_target(info)
print(f"  verified {info.path}: {info.length} bytes, sequence {info.custom['sequence']}")
shutil.rmtree(work)
PY
  echo "OpenSSF model signing (model_signing verify key, on the device's copy):"
  .venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['oms']['public_key'], end='')" \
    "$OUT/device/current/release.json" > "$OUT/device/oms-public.pem"
  PYTHONPATH=.venv/tools/model-signing .venv/bin/python -m model_signing verify key \
    --signature "$OUT/device/current/model.sig" --public_key "$OUT/device/oms-public.pem" \
    "$OUT/device/current/model.tflite"
else
  echo "Nothing was pushed to the OTA canary channel (no candidate was blessed): see the summary above."
fi
