"""Write docs/analysis-lift.png by running the plotting block of docs/analysis.md.

Run from the repository root: ``python docs/analysis.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def plot_block() -> str:
    """The ``python`` block of analysis.md that saves the figure."""
    blocks = re.findall(r"```python\n(.*?)```", (HERE / "analysis.md").read_text(), re.S)
    [block] = [b for b in blocks if "savefig" in b]
    return block


def main(output: Path = HERE / "analysis-lift.png") -> Path:
    """Run the block with ``OUTPUT`` set; returns the PNG's path."""
    exec(plot_block(), {"np": np, "OUTPUT": str(output)})  # noqa: S102 - our own document
    return output


if __name__ == "__main__":
    print(main())
