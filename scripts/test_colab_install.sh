#!/usr/bin/env bash
# Does a chapter's first cell install the book's package on Colab without touching Colab's torch?
#
# Plays Colab on this machine: a fresh virtual environment that already has a torch and a matching
# torchvision *different* from requirements.txt's pins (torch 2.13.0, CPU build, and torchvision
# 0.28.0), then runs a chapter's first cell exactly as written, with the repository URL replaced by
# this checkout, and checks that torch and torchvision were not reinstalled and that the shipped
# weights load and sample. Usage: scripts/test_colab_install.sh [notebooks/01_forward_process.ipynb]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
notebook=${1:-$root/notebooks/01_forward_process.ipynb}
COLAB_TORCH=${COLAB_TORCH:-2.13.0}
COLAB_TORCHVISION=${COLAB_TORCHVISION:-0.28.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py=$work/venv/bin/python
log=$work/pip.log
start=$(date +%s)

# "Colab": a torch and its torchvision already installed (torchvision without its pinned torch
# dependency pulling another torch; on Colab they come as a matching pair)
"$py" -m pip install -q "torch==$COLAB_TORCH" >"$log" 2>&1 || { tail "$log"; exit 1; }
"$py" -m pip install -q --no-deps "torchvision==$COLAB_TORCHVISION" >>"$log" 2>&1 || { tail "$log"; exit 1; }
before=$("$py" -m pip list --format=freeze 2>/dev/null | grep -E '^(torch|torchvision)==' | sort)
echo "before: $(echo $before)"

# The chapter's first cell, as written, with the repository URL pointing at this checkout
"$py" - "$notebook" "$root" >"$work/cell.py" <<'PY'
import json, re, sys
from pathlib import Path
notebook, root = Path(sys.argv[1]), Path(sys.argv[2])
url = re.search(r"^\s*url:\s*(\S+)", (root / "_config.yml").read_text(), re.M).group(1)
cell = next(c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
source = "".join(cell["source"])
install = f"ddpm_helpers @ git+{url}"
if install not in source:
    sys.exit(f"the first code cell of {notebook.name} does not install {install!r}")
print(source.replace(install, f"ddpm_helpers @ file://{root}"))
PY
(cd "$work" && DDPM_MODE=tiny MPLBACKEND=Agg "$py" cell.py) >"$work/cell.log" 2>&1 || { cat "$work/cell.log"; exit 1; }
grep -v "is ignored" "$work/cell.log" || true  # this machine's pip config lists local indexes that may not exist

after=$("$py" -m pip list --format=freeze 2>/dev/null | grep -E '^(torch|torchvision)==' | sort)
echo "after:  $(echo $after)"
if [ "$before" != "$after" ]; then
  echo "FAIL: the install cell changed torch or torchvision" >&2; exit 1
fi
(cd "$work" && "$py" - <<'PY'
import torch
import ddpm_helpers as dh
classifier = dh.load_classifier()
for name in ("unconditional", "conditional", "autoencoder", "latent"):
    dh.load_pretrained(name)
model = dh.load_pretrained("unconditional")
schedule = dh.make_schedule(model.diffusion.schedule, model.diffusion.T)
x = dh.sample(model.model, 4, dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=5), generator=torch.Generator().manual_seed(0))
assert x.shape == (4, 1, 32, 32) and bool(torch.isfinite(x).all())
print(f"shipped weights load and sample with torch {torch.__version__} (ddpm_helpers {dh.__version__} from {dh.__file__})")
PY
)
echo "PASS: the install kept torch and torchvision and the shipped weights work ($(( $(date +%s) - start )) s)"
