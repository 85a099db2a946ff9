"""Plot the training curves of a run: the CSV logs `neuralsim train` writes to OUT/logs/<stage>.csv.

    python examples/plot_training_logs.py runs/default/model --out docs/training_curves.png

One panel per stage: the autoencoder's reconstruction PSNR (dB, training batches) and the dynamics'
flow loss (x0 or velocity MSE, per the model's `prediction`), each with a moving average. Needs
matplotlib (`pip install -c constraints.txt ".[bench]"`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

PANELS = (("autoencoder", "psnr", "autoencoder: reconstruction PSNR (dB)"),
          ("dynamics", "flow", "dynamics: flow loss"))


def read_log(path: Path) -> dict[str, np.ndarray]:
    """A `neuralsim train` CSV log → one float array per column (rows with a missing value dropped per column)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, np.ndarray] = {}
    for name in rows[0] if rows else []:
        values = [(float(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        columns[name] = np.array(values)
    return columns


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(y)))
    return np.convolve(y, np.ones(window) / window, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `neuralsim train --out` directory (with logs/)")
    parser.add_argument("--out", type=Path, default=Path("docs/training_curves.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(stage, key, title) for stage, key, title in PANELS if (args.run / "logs" / f"{stage}.csv").exists()]
    if not panels:
        raise SystemExit(f"error: no logs/autoencoder.csv or logs/dynamics.csv under {args.run}")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    for ax, (stage, key, title) in zip(axes[0], panels):
        data = read_log(args.run / "logs" / f"{stage}.csv")[key]
        steps, values = data[:, 0], data[:, 1]
        ax.plot(steps, values, lw=0.6, alpha=0.4, label="logged")
        smooth = moving_average(values, 10)
        ax.plot(steps[len(steps) - len(smooth):], smooth, lw=1.5, label="moving average (10)")
        ax.set_title(title)
        ax.set_xlabel("optimisation step")
        if key == "flow":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
