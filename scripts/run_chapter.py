"""Run a chapter in full mode, store its outputs in the notebook, and publish the weights it wrote.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/run_chapter.py notebooks/06_latent.ipynb --publish autoencoder latent

This is how the shipped models of the latent chapter (and, with their names, of the training and
conditional chapters) are reproduced: the chapter is the one code path that trains them, and
``scripts/publish_weights.py`` the one step that copies a checked model into the package.
The notebook runs in its own folder, so its run folder is ``notebooks/runs/<chapter>/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path, help="the chapter, e.g. notebooks/06_latent.ipynb")
    parser.add_argument("--publish", nargs="*", default=[], metavar="NAME", help="models the chapter wrote to publish into the package")
    parser.add_argument("--force", action="store_true", help="replace shipped models of the same name")
    args = parser.parse_args()
    notebook = args.notebook.resolve()
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        raise SystemExit(f"notebook must be an existing .ipynb file, got {args.notebook}")
    started = time.perf_counter()
    env = {**os.environ, "DDPM_MODE": "full"}
    subprocess.run([sys.executable, "-m", "jupyter", "execute", "--inplace", "--timeout=-1", notebook.name], cwd=notebook.parent, env=env, check=True)
    print(f"{notebook.name}: full run stored in {(time.perf_counter() - started) / 60:.1f} min")
    for name in args.publish:
        source = notebook.parent / "runs" / notebook.stem / name
        command = [sys.executable, str(ROOT / "scripts" / "publish_weights.py"), str(source)] + (["--force"] if args.force else [])
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
