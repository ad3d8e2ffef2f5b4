"""Loaded by every pytest run from the repository root: tests and notebooks run in tiny mode.

Set here, before any kernel starts, so the kernels that nbval launches inherit it.
"""

import os

collect_ignore = ["_build", ".venv", "scripts", "benchmarks"]

os.environ["DDPM_MODE"] = "tiny"
os.environ.pop("DDPM_MNIST_ROOT", None)  # read the subset shipped with the package
# MNIST unless a test asks for another data set itself; the subsets shipped with the package
os.environ.pop("DDPM_DATASET", None)
os.environ.pop("DDPM_FASHION_MNIST_ROOT", None)
