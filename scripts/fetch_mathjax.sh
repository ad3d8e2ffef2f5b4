#!/usr/bin/env bash
# Put MathJax 3 into _extra/mathjax/ so that the built book renders its maths with no CDN: offline
# readers and the browser test see the same pages. It comes from the npm registry at a pinned
# version (not committed: it is someone else's code, Apache-2.0, and 4 MB). The book build copies
# _extra/ to the site's root (html_extra_path; not _static/, whose every .js Jupyter Book would add
# to each page as a script), and _config.yml points Sphinx's mathjax_path at /mathjax/.
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.2.2
dest=_extra/mathjax
if [ -f "$dest/tex-mml-chtml.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  echo "MathJax $version already in $dest"; exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to fetch MathJax (apt-get install npm, or install Node.js)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-save --no-audit --no-fund --loglevel=error "mathjax@$version" >/dev/null
src=$tmp/node_modules/mathjax/es5
rm -rf "$dest"
mkdir -p "$dest/output"
# the combined TeX + MathML -> CommonHTML build, and what it may load on demand (TeX extensions,
# the menu, accessibility), with the CommonHTML fonts
cp -r "$src/tex-mml-chtml.js" "$src/input" "$src/ui" "$src/a11y" "$dest/"
cp -r "$src/output/chtml" "$dest/output/"
cp "$tmp/node_modules/mathjax/LICENSE" "$dest/LICENSE"
echo "$version" > "$dest/VERSION"
echo "MathJax $version in $dest ($(du -sh "$dest" | cut -f1))"
