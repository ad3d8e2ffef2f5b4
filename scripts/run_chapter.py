"""Run a chapter in full mode, store its outputs in the notebook, and publish the weights it wrote.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/run_chapter.py notebooks/06_latent.ipynb --publish autoencoder latent
    python scripts/run_chapter.py notebooks/01_forward_process.ipynb --smoke    # tiny mode; the chapter is left as it is

This is how the shipped models of the latent chapter (and, with their names, of the training and
conditional chapters) are reproduced: the chapter is the one code path that trains them, and
``scripts/publish_weights.py`` the one step that copies a checked model into the package.
The notebook runs in its own folder, so its run folder is ``notebooks/runs/<chapter>/``.

The executed notebook is written beside the chapter first and replaces it only at the end, and only
if the chapter's file is unchanged since the run began: an edit saved during a run (which an
in-place run would silently overwrite) stops the script with both versions kept.

``--smoke`` runs the chapter in tiny mode (``DDPM_MODE=tiny``, seconds to minutes) into a temporary
copy that is deleted afterwards: the chapter, its stored outputs and the package stay untouched, and
nothing is published.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def executed_path(notebook: Path, smoke: bool = False) -> Path:
    """Where the run writes the executed chapter before it replaces the original (a smoke run: before it is deleted)."""
    return notebook.with_name(f".{notebook.stem}{'.smoke' if smoke else ''}.running.ipynb")


def execute(notebook: Path, executed: Path, mode: str) -> None:
    """Run ``notebook`` in its own folder with ``DDPM_MODE=mode``, writing the executed copy to ``executed``."""
    env = {**os.environ, "DDPM_MODE": mode}
    subprocess.run([sys.executable, "-m", "jupyter", "execute", f"--output={executed.name}", "--timeout=-1", notebook.name],
                   cwd=notebook.parent, env=env, check=True)


def digest(path: Path) -> str:
    """The SHA-256 of the file's bytes: any saved edit changes it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replace_if_unchanged(notebook: Path, executed: Path, digest_at_start: str) -> None:
    """Move ``executed`` over ``notebook``, unless ``notebook`` changed since the run began.

    Raises SystemExit naming both files when it did: the edit is in the chapter, the outputs in
    the executed copy, and neither is lost.
    """
    if digest(notebook) != digest_at_start:
        raise SystemExit(f"{notebook.name} was edited during the run: its outputs are in {executed} and the edited "
                         f"chapter is untouched; commit the edit and run the chapter again")
    os.replace(executed, notebook)  # atomic on one file system: the chapter is never half written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path, help="the chapter, e.g. notebooks/06_latent.ipynb")
    parser.add_argument("--publish", nargs="*", default=[], metavar="NAME", help="models the chapter wrote to publish into the package")
    parser.add_argument("--force", action="store_true", help="replace shipped models of the same name")
    parser.add_argument("--smoke", action="store_true", help="run in tiny mode into a temporary copy; store nothing, publish nothing")
    args = parser.parse_args()
    notebook = args.notebook.resolve()
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        raise SystemExit(f"notebook must be an existing .ipynb file, got {args.notebook}")
    if args.smoke and args.publish:
        parser.error("--smoke publishes nothing: drop --publish")
    started = time.perf_counter()
    at_start = digest(notebook)
    executed = executed_path(notebook, smoke=args.smoke)
    if args.smoke:
        try:
            execute(notebook, executed, "tiny")
        finally:
            executed.unlink(missing_ok=True)
        if digest(notebook) != at_start:
            raise SystemExit(f"{notebook.name} changed during the smoke run (it must not: the run writes a temporary copy)")
        print(f"{notebook.name}: tiny-mode run passed in {(time.perf_counter() - started) / 60:.1f} min; the chapter is unchanged")
        return
    execute(notebook, executed, "full")
    replace_if_unchanged(notebook, executed, at_start)
    print(f"{notebook.name}: full run stored in {(time.perf_counter() - started) / 60:.1f} min")
    for name in args.publish:
        source = notebook.parent / "runs" / notebook.stem / name
        command = [sys.executable, str(ROOT / "scripts" / "publish_weights.py"), str(source)] + (["--force"] if args.force else [])
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
