#!/usr/bin/env bash
# Installs the pinned node-opcua packages into .tools/node: a second OPC UA stack besides asyncua,
# which tests/integration/test_nodeset_node_opcua.py loads the NodeSet2 export with and
# tests/e2e/test_node_opcua_client.py drives the demo with, as UaExpert-style clients do.
# Idempotent and quiet when already installed. Never fails the caller: without npm, or when
# the install fails, it prints one line and exits 0, and that test is skipped.
# 2.182.x is the last release line that runs on Node.js 20 (2.183+ need Node.js >= 22.13).
set -u
cd "$(dirname "$0")/.."

PREFIX=.tools/node
PACKAGES=(
    node-opcua-address-space@2.182.2
    node-opcua-client@2.182.2
    node-opcua-nodesets@2.182.0
)

installed() {
    local spec name version
    for spec in "${PACKAGES[@]}"; do
        name=${spec%@*}
        version=${spec##*@}
        grep -q "\"version\": *\"$version\"" "$PREFIX/node_modules/$name/package.json" 2>/dev/null \
            || return 1
    done
}

installed && exit 0

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-node-opcua: node/npm not found; the node-opcua tests will be skipped" >&2
    exit 0
fi

mkdir -p "$PREFIX"
if npm install --prefix "$PREFIX" --save-exact --omit=dev --no-audit --no-fund \
        --loglevel=error "${PACKAGES[@]}" >"$PREFIX/install.log" 2>&1 && installed; then
    exit 0
fi
echo "install-node-opcua: npm install failed (see $PREFIX/install.log); the node-opcua tests will be skipped" >&2
exit 0
