"""Plot the training curves of a run: the CSV logs `neuralsim train` writes to OUT/logs/<stage>.csv.

    python examples/plot_training_logs.py runs/default/model --out docs/training_curves.png \
        --streaming runs/default/streaming1 runs/default/streaming2 runs/default/streaming3 \
        runs/default/streaming4 runs/default/streaming5 runs/default/streaming6 runs/default/streaming7

One panel per stage: the autoencoder's reconstruction PSNR (dB, training batches) and the dynamics'
flow loss (x0 or velocity MSE, per the model's `prediction`), each with a moving average; with
`--streaming`, one more panel: the streaming stages one after the other (`flow_next`: the x0 error of
the frames after the first, most at tau = 1 and many on the model's own history). Needs matplotlib
(`pip install -c constraints.txt ".[bench]"`).
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
    parser.add_argument("--streaming", type=Path, nargs="*", default=[],
                        help="the `neuralsim train dynamics --streaming` runs that followed, in order")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [([args.run / "logs" / f"{stage}.csv"], key, title) for stage, key, title in PANELS
              if (args.run / "logs" / f"{stage}.csv").exists()]
    if args.streaming:
        panels.append(([run / "logs" / "dynamics.csv" for run in args.streaming], "flow_next",
                       f"{len(args.streaming)} streaming stages: x0 error after the first frame"))
    if not panels:
        raise SystemExit(f"error: no logs/autoencoder.csv or logs/dynamics.csv under {args.run}")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    for ax, (logs, key, title) in zip(axes[0], panels):
        parts, offset = [], 0.0
        for i, log in enumerate(logs):  # stages one after the other on one step axis
            part = read_log(log)[key]
            parts.append(part + [offset, 0.0])
            if i:  # a new stage (longer windows, more own history): its loss is not comparable across the line
                ax.axvline(offset, color="grey", lw=0.8, ls="--")
            offset += part[-1, 0] + 1
        data = np.concatenate(parts)
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
    from neuralsim.checkpoints import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
