#!/usr/bin/env bash
# Run the conformance suite against @tus/server (tus-node-server) with @tus/file-store.
#
#   conformance/run_tus_node_server.sh [--markdown] [-v] ...   (arguments go to the suite)
#
# Installs the two npm packages into a scratch folder outside the repository
# (TUS_NODE_DIR, default ${TMPDIR:-/tmp}/tus-node-conformance), starts the server on a free
# loopback port with expiration and a 1 GiB maximum size, runs `python -m conformance`
# against it and stops it again. Exit status is the suite's.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
work="${TUS_NODE_DIR:-${TMPDIR:-/tmp}/tus-node-conformance}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3

mkdir -p "$work"
cd "$work"
[ -f package.json ] || echo '{"private": true, "type": "module"}' > package.json
npm install --silent --no-audit --no-fund @tus/server@2 @tus/file-store@2 >/dev/null
versions=$(node -e 'for (const p of ["@tus/server", "@tus/file-store"]) console.log(p + "@" + require("./node_modules/" + p + "/package.json").version)' | paste -sd " ")

cat > server.mjs <<'JS'
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const port = Number(process.argv[2]);
const server = new Server({
  path: "/files",
  maxSize: 1024 ** 3,
  datastore: new FileStore({ directory: "./uploads", expirationPeriodInMilliseconds: 3600_000 }),
});
server.listen({ host: "127.0.0.1", port }, () => console.log(`listening on ${port}`));
JS

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf uploads
node server.mjs "$port" > server.log 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || { cat server.log; exit 2; }
  sleep 0.1
done

echo "# conformance of $versions (node $(node --version))"
cd "$root"
"$python" -m conformance "http://127.0.0.1:$port/files/" "$@"
