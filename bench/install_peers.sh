#!/usr/bin/env bash
# Opt-in: install the peer bridges the benchmark compares against into bench/.peers/ (never project deps).
#   mcp-remote (npm), mcp-stdio (PyPI), mcp-proxy (PyPI, in its own venv with the mcp 1.x it needs).
# Usage: bash bench/install_peers.sh     (then: uv run python -m bench)
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .peers && cd .peers

if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --prefix node mcp-remote@0.15.1 >/dev/null
    echo "installed mcp-remote $(node -p 'require("./node/node_modules/mcp-remote/package.json").version')"
else
    echo "npm not found: skipping mcp-remote" >&2
fi

UV=(uv)
command -v uv >/dev/null 2>&1 || UV=(python3 -m uv)
for peer in mcp-stdio mcp-proxy; do
    "${UV[@]}" venv --quiet --python 3.11 "$peer" >/dev/null
    "${UV[@]}" pip install --quiet --python "$peer/bin/python" "$peer" >/dev/null
    echo "installed $peer $("$peer/bin/python" -c "import importlib.metadata as m; print(m.version('$peer'))")"
done
