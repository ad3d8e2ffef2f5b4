#!/usr/bin/env bash
# Put onnxruntime-web into _extra/try_it/ort/ so that the "Try it" page (book/try_it.md) runs the
# book's models in the reader's browser with nothing fetched from a CDN, as MathJax is served
# (scripts/fetch_mathjax.sh). It comes from the npm registry at a pinned version (not committed: it is
# someone else's code, MIT, and large). Only what the page loads is copied:
#   ort.wasm.min.mjs + ort-wasm-simd-threaded.{mjs,wasm}                     the WebAssembly build (about 15 MB), the default
#   ort.webgpu.min.mjs + ort-wasm-simd-threaded.asyncify.{mjs,wasm}          the WebGPU build (about 29 MB), only on the reader's request
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.31.1
dest=_extra/try_it/ort
files=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
       ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm)
if [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ] && [ -f "$dest/${files[2]}" ] && [ -f "$dest/${files[5]}" ]; then
  echo "onnxruntime-web $version already in $dest"; exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to fetch onnxruntime-web (apt-get install npm, or install Node.js)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error "onnxruntime-web@$version" >/dev/null
src=$tmp/node_modules/onnxruntime-web
rm -rf "$dest"
mkdir -p "$dest"
for f in "${files[@]}"; do cp "$src/dist/$f" "$dest/"; done
# the package ships no LICENSE file; record what its package.json declares
node -e 'const p = require(process.argv[1]); console.log(`${p.name} ${p.version}: license ${p.license}, (c) Microsoft Corporation, ${p.homepage || p.repository.url}`)' "$src/package.json" > "$dest/NOTICE"
echo "$version" > "$dest/VERSION"
echo "onnxruntime-web $version in $dest ($(du -sh "$dest" | cut -f1))"
