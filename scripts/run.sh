#!/usr/bin/env bash
# The main job: the slot pool `slotbox up` with its embedded default (local scheduler: `slotbox
# serve` child processes, bubblewrap isolation, cgroup limits), on 127.0.0.1:8090, in the
# foreground until Ctrl-C or SIGTERM (which stop every sandbox server and their commands).
# Extra arguments go to `slotbox up` (e.g. `bash scripts/run.sh --min 2 --port 0`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked -p slotbox-cli
cat >&2 <<'USAGE'
Try it from another terminal, for example with Python's standard library:
  python3 - <<'PY'
  import json, urllib.request
  def call(method, path, body=None):
      data = None if body is None else json.dumps(body).encode()
      request = urllib.request.Request("http://127.0.0.1:8090" + path, data=data, method=method)
      with urllib.request.urlopen(request) as response:
          return json.loads(response.read())
  lease = call("POST", "/v1/leases", {})
  print(call("POST", "/v1/leases/%s/exec" % lease["lease_id"], {"command": "echo hi; uname -a"}))
  call("DELETE", "/v1/leases/%s" % lease["lease_id"])
  PY
USAGE
exec target/release/slotbox up "$@"
