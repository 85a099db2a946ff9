"""Can a sentence say what lies behind the camera? The prompt start told which wall the camera faces.

The dream shows what the last real frame showed (its frame memory) and paints the rest as the dynamics' one-step mean,
which ignores the sentence: turned 180 degrees from a real frame, the wall in view is the room's in 0.07 of layouts
with the sentence and without it (``behind_wall_accuracy`` in ``prompt_fidelity.py``). A route to draw it: let the
prompt-start generator (``neuralsim.prompt_start``) draw the view at a stated heading, then paint the views around
the start into the memory. This script measures the first half on the shipped model:

1. **Data**: ``--layouts`` rooms of the default task (seeds from 5,000,000, the prompt start's own range), each at its
   start heading and at a random one: the frame and the room's description with ``describe_view=True``, which ends
   with the wall the camera faces (``"...; the camera starts facing the yellow south wall"``; ``--clause compass``
   names only the direction, ``"...; the camera starts facing south"``; ``--plain-fraction F`` leaves it out of a
   share F of the start-heading frames' prompts, for a prompt start that serves sentences with and without it).
2. **Fine-tune** a copy of the shipped prompt start on them (``--steps`` × 64, AdamW, lr 5e-4 cosine; its own loss,
   ``PromptStart.loss``, 10 % of the prompts dropped).
3. **Score** on ``--eval`` held-out layouts (``prompt_fidelity.py``'s seeds and probe: a CNN trained on real room
   frames to read the floor colour and the wall filling most of the view): the frames generated from each layout's
   sentence with the clause for its true start heading (``here``) and for the opposite heading (``behind``), against
   the real frames at those headings. ``wall_accuracy_*``: the probe reads the real frame's wall;
   ``..._plain``: the same model without the clause; ``..._shipped``: the shipped prompt start without it;
   ``probe_real_*``: the probe on the real frames (its ceiling).

    OMP_NUM_THREADS=1 python benchmarks/prompt_heading.py --quick   # ~2 min: 1,000 layouts, 150 steps, 48 scored
    OMP_NUM_THREADS=1 python benchmarks/prompt_heading.py           # ~9 min: 8,000 layouts, 800 steps, 128 scored

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/prompt_heading.json``
(``--quick``: ``prompt_heading_quick.json``). Nothing is installed: the fine-tuned model lives in a temporary
directory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prompt_fidelity as PF  # noqa: E402  (its probe, held-out seeds and dream helper)

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_SEED = 5_000_000


def room() -> Any:
    """The room whose descriptions end with the start heading (``describe_view=True``)."""
    return PF.room(describe_view=True)


def without_view(text: str) -> str:
    """A ``describe_view`` description without its start-heading clause."""
    from neuralsim.envs.room import VIEW_PREFIX

    return text.split("; " + VIEW_PREFIX)[0]


def sentence(text: str, yaw: float, clause: str) -> str:
    """The prompt of a description with the start-heading clause (``wall``: the room's own; ``compass``: the
    direction alone, "...; the camera starts facing south")."""
    from neuralsim.envs.room import VIEW_PREFIX, facing_wall

    return text if clause == "wall" else f"{without_view(text)}; {VIEW_PREFIX}{facing_wall(yaw)}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="world model name or checkpoint dir (default: default)")
    p.add_argument("--layouts", type=int, default=None, help="training layouts, 2 frames each (8,000; --quick 1,000)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps of 64 (800; --quick 150)")
    p.add_argument("--eval", type=int, default=None, help="held-out layouts scored (128; --quick 48)")
    p.add_argument("--probe-layouts", type=int, default=None, help="probe training layouts (600; --quick 300)")
    p.add_argument("--clause", choices=("wall", "compass"), default="wall",
                   help="what the start-heading clause names: the wall's colour and direction, the room's own "
                        "describe_view clause (default), or the direction alone")
    p.add_argument("--plain-fraction", type=float, default=0.0,
                   help="share of the start-heading frames whose prompt leaves the clause out (0-1, default 0): a "
                        "prompt start that must serve sentences with and without it (a sentence without the clause "
                        "describes the start view, so only those frames get one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small sizes: about 2 minutes, not a score")
    p.add_argument("--name", default=None, help="results file name (default prompt_heading[_quick])")
    p.add_argument("--results-dir", default=str(RESULTS), help="where the JSON goes (default benchmarks/results)")
    args = p.parse_args(argv)
    for name, full, quick in (("layouts", 8000, 1000), ("steps", 800, 150), ("eval", 128, 48),
                              ("probe_layouts", 600, 300)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 <= args.plain_fraction <= 1.0:
        p.error(f"--plain-fraction must be within 0-1, got {args.plain_fraction}")
    return args


def collect(layouts: int, seed: int, clause: str, plain_fraction: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Frames and their prompts: each layout at its start heading and at a random one; ``plain_fraction`` of the
    start-heading frames' prompts (drawn per frame) without the clause: a sentence without it describes the start
    view (given to a frame at a random heading, it would teach the generator that the sentence names no view)."""
    env, rng = room(), np.random.default_rng(seed)
    plain_rng = np.random.default_rng([seed, 1])  # its own stream: the headings stay those of any fraction
    frames, prompts = [], []
    for i in range(layouts):
        for view in range(2):
            options = {} if view == 0 else {"agent_yaw": float(rng.uniform(-math.pi, math.pi))}
            obs, info = env.reset(seed=TRAIN_SEED + i, options=options)
            frames.append(obs)
            text = sentence(info["description"], env.unwrapped.layout["agent_yaw"], clause)
            plain = view == 0 and plain_rng.random() < plain_fraction
            prompts.append(without_view(text) if plain else text)
    env.close()
    return np.stack(frames), prompts


def fine_tune(model: Any, frames: np.ndarray, prompts: list[str], steps: int, seed: int, lr: float = 5e-4) -> float:
    """Train ``model.prompt_start`` on the frames' latents and ``prompts``; returns the last 50 steps' mean loss."""
    with torch.no_grad():
        latents = torch.cat([model.encode(torch.from_numpy(frames[i : i + 256])[:, None]).float()[:, 0]
                             for i in range(0, len(frames), 256)])
    start = model.prompt_start.float().train()
    opt = torch.optim.AdamW(start.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(latents), (64,), generator=g)
        loss, _ = start.loss(latents[idx], [prompts[j] for j in idx.tolist()], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    start.eval()
    return float(np.mean(losses[-50:]))


def held_out_views(n: int, clause: str) -> dict[str, dict[str, list]]:
    """For ``n`` held-out layouts at their start heading (``here``) and turned 180° (``behind``): the real frames,
    their probe labels and the prompts with that heading's clause."""
    env = room()
    out = {view: {"frames": [], "labels": [], "prompts": []} for view in ("here", "behind")}
    for i in range(n):
        yaw = None
        for view in ("here", "behind"):
            options = {} if yaw is None else {"agent_yaw": math.remainder(yaw + math.pi, 2 * math.pi)}
            obs, info = env.reset(seed=PF.HELD_OUT_SEED + i, options=options)
            yaw = env.unwrapped.layout["agent_yaw"] if yaw is None else yaw
            out[view]["frames"].append(obs), out[view]["labels"].append(PF.labels_of(env))
            out[view]["prompts"].append(sentence(info["description"], env.unwrapped.layout["agent_yaw"], clause))
    env.close()
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from neuralsim.checkpoints import resolve_checkpoint
    from neuralsim.device import cpu_capability
    from neuralsim.model import WorldModel

    t0 = time.perf_counter()
    frames, prompts = collect(args.layouts, args.seed, args.clause, args.plain_fraction)
    model = WorldModel.from_pretrained(resolve_checkpoint(args.model, "--model")).float().eval()
    if model.prompt_start is None:
        raise SystemExit(f"--model {args.model!r} has no prompt-start generator (prompt_start_channels = 0)")
    loss = fine_tune(model, frames, prompts, args.steps, args.seed)
    t_train = time.perf_counter() - t0

    probe, probe_val = PF.train_probe(*PF.probe_data(args.probe_layouts, args.seed), args.seed, epochs=12)
    data = held_out_views(args.eval, args.clause)
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for view, views in data.items():
            labels = np.array(views["labels"])
            res[f"probe_real_{view}"] = float(np.mean(probe.predict(np.stack(views["frames"]))[:, 1] == labels[:, 1]))
            plain = [without_view(p) for p in views["prompts"]]
            runs = {"": (tmp, views["prompts"]), "_plain": (tmp, plain), "_shipped": (args.model, plain)}
            for suffix, (model_dir, sentences) in runs.items():
                start, _ = PF.dream_from_prompts(model_dir, sentences, args.seed)
                pred = probe.predict(start)
                res[f"wall_accuracy_{view}{suffix}"] = float(np.mean(pred[:, 1] == labels[:, 1]))
                res[f"floor_accuracy_{view}{suffix}"] = float(np.mean(pred[:, 0] == labels[:, 0]))
    res = {k: round(v, 4) for k, v in res.items()}

    print(f"{'frames generated from':44s} {'wall here':>10s} {'wall behind':>12s} {'floor here':>11s}")
    for suffix, name in (("", f"sentence + clause ({args.clause}), fine-tuned"), ("_plain", "sentence alone, fine-tuned"),
                         ("_shipped", "sentence alone, shipped prompt start")):
        print(f"{name:44s} {res[f'wall_accuracy_here{suffix}']:10.3f} {res[f'wall_accuracy_behind{suffix}']:12.3f} "
              f"{res[f'floor_accuracy_here{suffix}']:11.3f}")
    print(f"{'the probe on the real frames (ceiling)':44s} {res['probe_real_here']:10.3f} {res['probe_real_behind']:12.3f}")
    out = {"benchmark": "prompt_heading", "model": args.model, "quick": args.quick, "clause": args.clause,
           "plain_fraction": args.plain_fraction,
           "layouts": args.layouts, "steps": args.steps, "eval_layouts": args.eval, "final_loss": round(loss, 4),
           "probe_val_accuracy": [round(float(a), 3) for a in probe_val], **res,
           "train_seconds": round(t_train, 1), "seconds": round(time.perf_counter() - t0, 1),
           "machine": {"torch": torch.__version__, "cpu_capability": cpu_capability(), "threads": args.threads},
           "dtype": "float32"}
    name = args.name or ("prompt_heading_quick" if args.quick else "prompt_heading")
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    from neuralsim.checkpoints import atomic_write_json

    atomic_write_json(results / f"{name}.json", out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
