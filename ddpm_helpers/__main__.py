"""The shipped models from the shell: ``python -m ddpm_helpers sample ...`` writes a PNG grid.

    python -m ddpm_helpers sample --model conditional --digit 7 --num 8 --out sevens.png
    python -m ddpm_helpers sample --model conditional --digit 0 1 2 3 4 5 6 7 8 9 --out digits.png
    python -m ddpm_helpers sample --model unconditional --num 16 --sampler ddim --steps 50 --out grid.png
    python -m ddpm_helpers sample --model latent --num 16 --out latent.png

The same call as :func:`ddpm_helpers.generate.generate`; with ``--digit`` each digit is drawn
``--num`` times (default once). Bad arguments end with exit status 2 and a message that names them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .generate import generate
from .steps import STEPS
from .viz import image_grid


def write_png(images, path: Path, nrow: int) -> Path:
    """Tile images in [-1, 1] (B, 1, H, W) into one grid and write it as an 8-bit grey PNG."""
    pixels = np.round(image_grid(images, nrow=nrow) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, format="PNG")
    return path


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command, ``sample``."""
    main_parser = argparse.ArgumentParser(prog="python -m ddpm_helpers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main_parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="draw digits from a shipped model into a PNG grid")
    sample.add_argument("--model", default="conditional", help="a shipped diffusion model: conditional, unconditional or latent (default: %(default)s)")
    sample.add_argument("--digit", type=int, nargs="+", default=None, help="digits to draw (class-conditional models), e.g. --digit 7 or --digit 0 1 2")
    sample.add_argument("--num", type=int, default=None, help="with --digit: images per digit (default 1); otherwise: how many images")
    sample.add_argument("--sampler", default="dpm-solver++-sde", help=f"one of {list(STEPS)} (default: %(default)s)")
    sample.add_argument("--steps", type=int, default=20, help="sampling steps (default: %(default)s; the 'ddpm' sampler always takes all T)")
    sample.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance s (conditional models; default: %(default)s)")
    sample.add_argument("--seed", type=int, default=0, help="the same seed gives the same images (default: %(default)s)")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: %(default)s)")
    sample.add_argument("--nrow", type=int, default=8, help="images per row of the grid (default: %(default)s)")
    sample.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    return main_parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    main_parser = parser()
    args = main_parser.parse_args(argv)
    try:
        if args.nrow < 1:
            raise ValueError(f"--nrow must be a positive number of images per row, got {args.nrow}")
        if args.out.suffix.lower() != ".png":
            raise ValueError(f"--out must name a .png file, got {str(args.out)!r}")
        digits = None
        if args.digit is not None:
            if args.num is not None and args.num < 1:
                raise ValueError(f"--num must be a positive number of images per digit, got {args.num}")
            digits = [d for d in args.digit for _ in range(args.num or 1)]
        result = generate(
            args.model, digits=digits, num_images=None if digits is not None else args.num,
            sampler=args.sampler, steps=None if args.sampler == "ddpm" else args.steps, guidance_scale=args.guidance_scale,
            seed=args.seed, device=args.device,
        )
    except (ValueError, FileNotFoundError) as error:
        main_parser.exit(2, f"{main_parser.prog} sample: error: {error} (--digit gives digits, --num gives num_images)\n")
    write_png(result.images, args.out, args.nrow)
    what = f"digits {result.digits}" if result.digits is not None else f"{len(result.images)} images"
    print(f"wrote {args.out}: {what} from {result.model!r}, sampler {result.spec}, seed {result.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
