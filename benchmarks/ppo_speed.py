"""How fast PPO trains in the dream and in the real env it imitates, with rgb and with latent observations.

    OMP_NUM_THREADS=1 python benchmarks/ppo_speed.py [--quick] [--timesteps 16384] [--obs rgb latent latent-frames] [--model default]

The user's question "could I have trained faster in the dream?" without the transfer benchmark's half hour: PPO
exactly as `neuralsim eval transfer` trains it (`agents.transfer.train_ppo`: 16 envs, the walk-and-turn keys,
`PPO_KWARGS`; rgb: CnnPolicy on 64×64 frames; latent: the transfer benchmark's latent extractor (``--latent-extractor``,
default ``auto``: ``LatentCellCNN`` taught where the dream's target is, ``agents.pretrain``, where the model has a
target tracker, else ``LatentCNN``) on the model's latent frames, the dream skipping its decoder and the real env
encoding each frame through the checkpoint's encoder; latent-frames: the same, the dream's latents its decoded frames
encoded again, ``latent_source="frames"``, whose real env is latent's, trained once when both are asked for) for
``--timesteps`` env steps in each world and observation type, one seed. Reported per row: env-steps/s of the whole training (rollouts + updates) and of the rollouts alone
(a taught extractor's pretraining, the same in both worlds, is timed apart: ``pretrain_s``); and the ratios that answer the question: the dream's training speed over the real env's with the
same observations, and over the real env's with rgb (what a user would otherwise run). Prints a table; the last
line is one JSON object, also written to benchmarks/results/ppo_speed.json (``--quick``: ppo_speed_quick.json,
2,048 steps per row with 4 envs and short rollouts, a smoke run). Only ratios within one run compare (CPUs and
their load differ between runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import neuralsim  # noqa: F401  (registers the envs)
from neuralsim.agents.transfer import QUICK_PPO_KWARGS, TransferConfig, latent_extractor_of, train_ppo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, rounded, write_result  # noqa: E402

WORLDS = ("real", "dream")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="world model name or checkpoint dir (default: default)")
    parser.add_argument("--timesteps", type=int, default=None, help="PPO env steps per row (default 16,384; --quick 2,048)")
    parser.add_argument("--obs", nargs="+", choices=("rgb", "latent", "latent-frames"), default=["rgb", "latent"],
                        help="observation types (default rgb latent; latent-frames: latent_source='frames')")
    parser.add_argument("--latent-extractor", choices=("auto", "pretrained", "cells", "cnn"), default="auto",
                        help="the latent rows' extractor, as `neuralsim eval transfer --latent-extractor` (default auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,048 env steps per row, 4 envs: about a minute")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/ppo_speed.json)")
    args = parser.parse_args(argv)
    timesteps = args.timesteps if args.timesteps is not None else (2048 if args.quick else 16_384)
    cfg = TransferConfig(model=args.model, timesteps=timesteps, checkpoints=1, latent_extractor=args.latent_extractor,
                         **(dict(num_envs=4, ppo=dict(QUICK_PPO_KWARGS), pretrain_frames=256, pretrain_epochs=1)
                            if args.quick else {}))
    try:
        cfg.validate(cli=True)
    except ValueError as e:
        parser.error(str(e))
    out = args.out or RESULTS_DIR / ("ppo_speed_quick.json" if args.quick else "ppo_speed.json")

    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    print(f"{'world':<6} {'obs':<13} {'env steps':>9} {'wall s':>7} {'env-steps/s':>12} {'rollouts only':>14}", flush=True)
    for obs in dict.fromkeys(args.obs):  # the order given, once each
        for world in WORLDS:
            latent_source = "frames" if obs == "latent-frames" else "dynamics"
            if world == "real" and obs == "latent-frames":  # the real env's latents do not depend on the dream's source
                same = next((r for r in rows if r["world"] == "real" and r["obs"] == "latent"), None)
                if same is not None:
                    rows.append({**same, "obs": obs, "same_as": "latent"})
                    continue
            with tempfile.TemporaryDirectory(prefix="ppo_speed_") as workdir:  # the policies are not kept
                run = train_ppo(world, dataclasses.replace(cfg, obs=obs.split("-")[0], latent_source=latent_source),
                                args.seed, Path(workdir))
            row = {"world": world, "obs": obs, "env_steps": run["env_steps"], "wall_s": run["wall_s"],
                   "env_steps_per_s": run["env_steps_per_s"], "rollout_env_steps_per_s": run["rollout_env_steps_per_s"]}
            if obs != "rgb":
                row["extractor"] = latent_extractor_of(cfg)
                if "pretraining" in run:
                    row["pretrain_s"] = run["pretraining"]["label_s"] + run["pretraining"]["train_s"]
            rows.append(row)
            print(f"{world:<6} {obs:<13} {row['env_steps']:>9,} {row['wall_s']:>7.1f} {row['env_steps_per_s']:>12.1f} "
                  f"{row['rollout_env_steps_per_s']:>14.1f}", flush=True)
    speed = {(r["world"], r["obs"]): r["env_steps_per_s"] for r in rows}
    key = lambda obs: obs.replace("-", "_")  # noqa: E731  (flat JSON keys)
    ratios = {f"dream_{key(obs)}_vs_real_{key(obs)}": speed[("dream", obs)] / speed[("real", obs)] for obs in args.obs}
    if ("real", "rgb") in speed:
        ratios.update({f"dream_{key(obs)}_vs_real_rgb": speed[("dream", obs)] / speed[("real", "rgb")] for obs in args.obs})
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    result = {"benchmark": "ppo_speed", "quick": args.quick, "model": args.model, "timesteps": timesteps,
              "seed": args.seed, "num_envs": cfg.num_envs, "keys": list(cfg.keys), "ppo": cfg.ppo, "rows": rows,
              **ratios, "seconds": time.perf_counter() - t0, "machine": machine_info()}
    result = rounded(result)
    write_result(result, out)
    return result


if __name__ == "__main__":
    main()
