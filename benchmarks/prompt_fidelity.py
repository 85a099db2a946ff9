"""Does a dream started from a sentence show what the sentence says? An attribute probe on real and generated frames.

Protocol.

1. **Probe.** A small CNN is trained on *real* room frames (``NeuralSimRoom-v0``'s default task; layouts of seeds
   7,000,000+, each its start frame and three frames after 4-12 random steps) to read three attributes, labelled
   from the room's state (``NeuralSimRoomEnv.layout`` and ``visible_pixels()``, MuJoCo's segmentation render):
   the floor colour (8 classes), the colour of the wall that fills most of the view (11), and the colour of the
   largest box in view, or "none" when no box shows 20 pixels (11). The objects are the boxes: the target ball is
   in 99.5 % of start frames (the task starts facing it) and 2-5 pixels across at 64x64, so the probe cannot read
   its colour even on real frames (about 0.1, chance; measured also with a per-position detector head).
2. **Held-out layouts** (seeds 9,000,000+, never seen by the probe nor, for a model trained by the recipe, by
   ``neuralsim train prompt``, whose data starts at 5,000,000): the real start frame and its description
   (``info["description"]``). A frame is scored against the *sentence*: floor colour = the named floor; the wall in
   view is one of the four named walls; the object attribute is a hit when the frame shows a box whose colour the
   sentence gives a box (a frame that shows no box is a miss: the real start frames show one in about 2/3 of the
   layouts, which is that attribute's ceiling beside the probe's errors).
   ``attribute_accuracy`` is the mean over floor and wall and the layouts of the frame that
   ``WorldModelVectorEnv.reset(options={"prompt": description})`` produces; ``object_accuracy`` is the object
   attribute's, ``attribute_accuracy_all`` the mean of the three (each also on the real frames, at t+16 and without
   a prompt);
   ``attribute_accuracy_real``: the same score of the probe on the real start frames (its ceiling);
   ``attribute_accuracy_t16``: the frame after 16 dream steps of walking and turning from that start
   (``w``x4, ``l``x4, ``w``x4, ``j``x4);
   ``attribute_accuracy_unconditional``: frames started without a prompt, scored against the same sentences (chance).
3. **One attribute changed.** Each held-out sentence with its floor colour replaced by another floor colour: the
   fraction of generated frames whose probed floor follows the new word (``floor_swap_follows``).
4. **Behind the camera.** From each held-out layout's *real* start frame, ``l`` held 45 steps (180°) in the real room
   and in dreams started from that frame with its sentence and without: the probe reads the wall in view at the end,
   scored exactly against the real room's (``behind_wall_accuracy`` with the sentence, ``..._no_prompt`` without,
   ``..._real`` the probe on the real turned frames). The start image does not show that wall; the sentence names it.
   A model with a view generator (``config.prompt_view_channels``, ``neuralsim train views``) draws the views around
   the start from the sentence and its frame memory holds them: ``behind_view_accuracy`` scores the one drawn 180
   degrees behind as drawn (null for a model without one).
5. **Prompts outside the room's language** (typos, shuffled clauses, a colour the room never has, a one-word prompt,
   a long unrelated sentence) must give a frame, never a crash: ``odd_prompts_ok`` counts them.

A PNG sheet (real start | generated | dream t+16, six held-out sentences) goes to ``--sheet`` (default
``docs/prompt_sheet.png``; ``--quick``: not written unless given).

    OMP_NUM_THREADS=1 python benchmarks/prompt_fidelity.py --quick    # about a minute: 48 layouts, small probe set
    OMP_NUM_THREADS=1 python benchmarks/prompt_fidelity.py            # 256 layouts (~4 min)

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/prompt_fidelity.json``
(``--quick``: ``prompt_fidelity_quick.json``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

PROBE_SEED, HELD_OUT_SEED = 7_000_000, 9_000_000
MIN_BOX_PIXELS = 20  # a box smaller than this in view counts as not shown
WALK_KEYS = ["w"] * 4 + ["l"] * 4 + ["w"] * 4 + ["j"] * 4  # 16 dream steps of walking and turning
TURN_AROUND_KEYS = ["l"] * 45  # the room turns 4 degrees a step: 180 degrees
ODD_PROMPTS = (
    "a room with a gren flor and a red bal near the bleu wall",  # typos
    "target: the red ball; a red ball near the blue wall; a room with a grey floor",  # clauses reordered
    "a room with a turquoise floor and a magenta ball",  # colours the room never has
    "ball",  # one word
    "the quick brown fox jumps over the lazy dog " * 8,  # long and unrelated (truncated by the tokenizer)
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped name")
    parser.add_argument("--layouts", type=int, default=None, help="held-out layouts (default 256; --quick 48)")
    parser.add_argument("--probe-layouts", type=int, default=None, help="probe training layouts (default 2500; --quick 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dream's noise and the probe's training")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sheet", type=Path, default=None, help="PNG sheet (default docs/prompt_sheet.png; --quick: none)")
    add_standard_args(parser, "prompt_fidelity", quick_help="48 layouts, 600 probe layouts, no sheet")
    args = parser.parse_args(argv)
    args.layouts = args.layouts or (48 if args.quick else 256)
    args.probe_layouts = args.probe_layouts or (600 if args.quick else 2500)
    resolve_standard_args(parser, args, "prompt_fidelity")
    if args.sheet is None and not args.quick:
        args.sheet = Path(__file__).resolve().parent.parent / "docs" / "prompt_sheet.png"
    if args.layouts < 6 or args.probe_layouts < 50:
        parser.error(f"--layouts must be >= 6 and --probe-layouts >= 50, got {args.layouts} and {args.probe_layouts}")
    return args


# ------------------------------------------------------------------------------------------ real frames and labels


def room(**kwargs: Any):
    """``NeuralSimRoom-v0`` made with ``kwargs`` (headless rendering)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import neuralsim  # noqa: F401

    return gym.make("NeuralSimRoom-v0", **kwargs)


def labels_of(env: Any) -> tuple[int, int, int]:
    """(floor colour, colour of the wall filling most of the view, colour of the largest box in view or NONE)."""
    from neuralsim.envs.room import FLOOR_COLOURS, OBJECT_COLOURS, OBJECTS, WALL_COLOURS, WALLS

    u = env.unwrapped
    pixels, layout = u.visible_pixels(), u.layout
    wall = max(WALLS, key=lambda w: pixels[w])
    boxes = [i for i, (_, kind, _) in enumerate(OBJECTS) if kind == "box"]
    largest = max(boxes, key=lambda i: pixels[OBJECTS[i][0]])
    box = (OBJECT_COLOURS.index(layout["object_colours"][largest]) if pixels[OBJECTS[largest][0]] >= MIN_BOX_PIXELS
           else len(OBJECT_COLOURS))
    return FLOOR_COLOURS.index(layout["floor_colour"]), WALL_COLOURS.index(layout["wall_colours"][wall]), box


def probe_data(layouts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[N, 64, 64, 3]`` and labels ``[N, 3]``: per layout its start frame and 3 frames after random walks."""
    env, rng = room(), np.random.default_rng(seed)
    frames, labels = [], []
    for i in range(layouts):
        for view in range(4):
            obs, _ = env.reset(seed=PROBE_SEED + i)
            for _ in range(0 if view == 0 else int(rng.integers(4, 13))):
                obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            frames.append(obs)
            labels.append(labels_of(env))
    env.close()
    return np.stack(frames), np.array(labels)


def held_out(layouts: int, turn_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Start frames, labels and descriptions of the held-out layouts, and what each sentence names; with
    ``turn_keys``, also the real frames after those keys from each start and their labels (``turned_frames``,
    ``turned_labels``)."""
    from neuralsim.actions import keys_to_vector
    from neuralsim.envs.room import FLOOR_COLOURS, OBJECT_COLOURS, OBJECTS, WALL_COLOURS

    env = room()
    frames, labels, texts, named_walls, named_boxes, turned, turned_labels = [], [], [], [], [], [], []
    for i in range(layouts):
        obs, info = env.reset(seed=HELD_OUT_SEED + i)
        frames.append(obs)
        labels.append(labels_of(env))
        texts.append(info["description"])
        layout = env.unwrapped.layout
        named_walls.append([WALL_COLOURS.index(c) for c in layout["wall_colours"].values()])
        named_boxes.append([OBJECT_COLOURS.index(c) for (_, kind, _), c in zip(OBJECTS, layout["object_colours"])
                            if kind == "box"])
        if turn_keys:
            for key in turn_keys:
                obs, *_ = env.step(keys_to_vector(key).astype(np.float32))
            turned.append(obs)
            turned_labels.append(labels_of(env))
    env.close()
    out = {"frames": np.stack(frames), "labels": np.array(labels), "texts": texts, "named_walls": named_walls,
           "named_boxes": named_boxes}
    out["floor_words"] = [FLOOR_COLOURS[f] for f in out["labels"][:, 0]]
    if turn_keys:
        out["turned_frames"], out["turned_labels"] = np.stack(turned), np.array(turned_labels)
    return out


# ------------------------------------------------------------------------------------------ the probe


class Probe(nn.Module):
    """64x64 rgb -> logits of floor colour (8), wall colour in view (11), largest box's colour or none (11)."""

    def __init__(self, classes: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.SiLU())
        self.heads = nn.ModuleList(nn.Linear(256, n) for n in classes)

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(frames.permute(0, 3, 1, 2).float() / 127.5 - 1)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict(self, frames: np.ndarray) -> np.ndarray:
        self.eval()
        out = [torch.stack([o.argmax(1) for o in self(torch.from_numpy(frames[i : i + 256]))], 1)
               for i in range(0, len(frames), 256)]
        return torch.cat(out).numpy()


def train_probe(frames: np.ndarray, labels: np.ndarray, seed: int, epochs: int) -> tuple[Probe, np.ndarray]:
    """The probe trained on 85 % of the frames (whole layouts); returns it and its accuracy per attribute on the rest."""
    from neuralsim.envs.room import FLOOR_COLOURS, OBJECT_COLOURS, WALL_COLOURS

    torch.manual_seed(seed)
    n_val = (len(frames) // 4 * 15 // 100) * 4  # whole layouts (4 frames each) held out
    x, y = torch.from_numpy(frames[n_val:]), torch.from_numpy(labels[n_val:])
    probe = Probe((len(FLOOR_COLOURS), len(WALL_COLOURS), len(OBJECT_COLOURS) + 1))
    opt = torch.optim.AdamW(probe.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, len(x) // 128)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = torch.randint(0, len(x), (128,), generator=g)
        batch = x[idx]
        if step % 2:  # mirror half the batches: left and right carry no label
            batch = batch.flip(2)
        probe.train()
        loss = sum(F.cross_entropy(o, y[idx, k].long()) for k, o in enumerate(probe(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    val = probe.predict(frames[:n_val]) == labels[:n_val]
    return probe, val.mean(axis=0)


# ------------------------------------------------------------------------------------------ dreams


def dream_from_prompts(model: str, prompts: list[str] | None, seed: int, keys: list[str] | None = None,
                       images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Start frames generated from ``prompts`` (one env each; or started from ``images``, with the prompts when given)
    and, with ``keys``, the frame after those steps."""
    from neuralsim.actions import keys_to_vector
    from neuralsim.envs import WorldModelVectorEnv

    n = len(images) if images is not None else len(prompts)
    options = {k: v for k, v in (("prompt", prompts), ("image", images)) if v is not None}
    env = WorldModelVectorEnv(n, model=model, max_episode_steps=None, return_frames=False)
    obs, _ = env.reset(seed=seed, options=options)
    start, last = obs.copy(), None
    for key in keys or []:
        obs, *_ = env.step(np.repeat(keys_to_vector(key)[None].astype(np.float32), n, 0))
        last = obs
    env.close()
    return start, None if last is None else last.copy()


def unconditional_starts(model: str, n: int, seed: int) -> np.ndarray:
    """Start frames the model generates with no prompt and no image (``init_state`` from nothing)."""
    from neuralsim.session import DreamSession

    session = DreamSession(model)
    with torch.inference_mode(), session.autocast():
        state = session.model.init_state(n, generator=session.generator(seed))
    return session.decode(state.latent[:, None], first_frame=True)[:, -1]


def drawn_behind_views(model: str, images: np.ndarray, prompts: list[str], seed: int) -> np.ndarray | None:
    """The views a model with a view generator (``config.prompt_view_channels``) draws 180 degrees behind each start
    image from its sentence, as its frame memory holds them (uint8 ``[N, H, W, 3]``); None for a model without one or
    without a 180-degree view."""
    from neuralsim.session import DreamSession

    session = DreamSession(model)
    cfg = session.model.config
    if not cfg.prompt_view_channels or 180.0 not in [abs(float(y)) for y in cfg.prompt_view_yaws_deg]:
        return None
    j = [abs(float(y)) for y in cfg.prompt_view_yaws_deg].index(180.0)
    out = []
    for k in range(0, len(images), 64):
        with torch.inference_mode(), session.autocast():
            state = session.model.init_state(len(images[k : k + 64]), frames=images[k : k + 64, None],
                                             prompt=prompts[k : k + 64], generator=session.generator(seed + k))
        out.append(((state.memory_earlier[:, j].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                   .permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def swap_word(text: str, old: str, new: str, noun: str) -> str:
    """``text`` with every ``old <noun>`` (e.g. "purple floor", "red ball") made ``new <noun>``."""
    return re.sub(rf"\b{old} {noun}\b", f"{new} {noun}", text)


def score(pred: np.ndarray, data: dict[str, Any]) -> dict[str, float]:
    """Per-attribute accuracy of probed frames against the sentences: floor, wall in view, a named box in view; the
    mean over floor and wall and the mean over all three."""
    from neuralsim.envs.room import OBJECT_COLOURS

    hits = {"floor": pred[:, 0] == data["labels"][:, 0],
            "wall": np.array([p in walls for p, walls in zip(pred[:, 1], data["named_walls"])]),
            "object": np.array([p in boxes for p, boxes in zip(pred[:, 2], data["named_boxes"])])}
    out = {name: float(hit.mean()) for name, hit in hits.items()}
    out["object_shown"] = float(np.mean(pred[:, 2] < len(OBJECT_COLOURS)))  # frames with a box in view
    out["mean"] = (out["floor"] + out["wall"]) / 2
    out["mean_all"] = (out["floor"] + out["wall"] + out["object"]) / 3
    return out


def write_sheet(path: Path, data: dict[str, Any], start: np.ndarray, t16: np.ndarray, rows: int = 6) -> None:
    """A PNG of ``rows`` held-out sentences: real start | generated start | dream t+16 (matplotlib, else a bare grid)."""
    from neuralsim.checkpoints import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import imageio.v3 as iio

        grid = np.concatenate([np.concatenate([data["frames"][i], start[i], t16[i]], 1) for i in range(rows)], 0)
        atomic_write(path, lambda tmp: iio.imwrite(tmp, grid, extension=".png"))
        return
    fig, axes = plt.subplots(rows, 4, figsize=(11, 2.0 * rows), gridspec_kw={"width_ratios": [3.2, 1, 1, 1]})
    for i in range(rows):
        text = data["texts"][i].replace("; ", ";\n").replace(", a ", ",\na ")
        axes[i, 0].text(0, 0.5, text, fontsize=6.5, va="center", wrap=True)
        for j, (img, title) in enumerate(((data["frames"][i], "real start"), (start[i], "from the sentence"),
                                          (t16[i], "dream t+16")), 1):
            axes[i, j].imshow(img)
            if i == 0:
                axes[i, j].set_title(title, fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    from neuralsim.envs.room import FLOOR_COLOURS
    from neuralsim.session import DreamSession

    t0 = time.perf_counter()
    frames, labels = probe_data(args.probe_layouts, args.seed)
    probe, val_acc = train_probe(frames, labels, args.seed, epochs=12 if args.quick else 20)
    data = held_out(args.layouts, TURN_AROUND_KEYS)
    real = score(probe.predict(data["frames"]), data)

    start, t16 = dream_from_prompts(args.model, data["texts"], args.seed, WALK_KEYS)
    gen, gen_t16 = score(probe.predict(start), data), score(probe.predict(t16), data)
    uncond = score(probe.predict(unconditional_starts(args.model, args.layouts, args.seed)), data)

    rng = np.random.default_rng(args.seed)
    new_floor = [str(rng.choice([c for c in FLOOR_COLOURS if c != old])) for old in data["floor_words"]]
    swapped_floor, _ = dream_from_prompts(args.model, [swap_word(t, o, n, "floor") for t, o, n in
                                                       zip(data["texts"], data["floor_words"], new_floor)], args.seed)
    floor_follows = float(np.mean(probe.predict(swapped_floor)[:, 0] == [FLOOR_COLOURS.index(c) for c in new_floor]))

    turned_labels = data["turned_labels"]
    behind = {"real": probe.predict(data["turned_frames"])[:, 1]}
    for name, prompts in (("prompt", data["texts"]), ("no_prompt", None)):
        behind[name] = probe.predict(dream_from_prompts(args.model, prompts, args.seed, TURN_AROUND_KEYS,
                                                        images=data["frames"])[1])[:, 1]
    views = drawn_behind_views(args.model, data["frames"], data["texts"], args.seed)
    if views is not None:  # the view generator's own drawing, before the memory and the dream show it
        behind["view"] = probe.predict(views)[:, 1]
    behind_acc = {name: float(np.mean(pred == turned_labels[:, 1])) for name, pred in behind.items()}

    odd_ok = 0
    session = DreamSession(args.model)
    for prompt in ODD_PROMPTS:
        try:
            state, rgb, _ = session.start(1, session.generator(args.seed), prompt=prompt)
            odd_ok += int(rgb.shape[-3:] == (64, 64, 3) and np.isfinite(state.latent.numpy()).all())
        except ValueError as exc:  # a clear refusal counts as handled too
            odd_ok += int(bool(str(exc)))
    if args.sheet is not None:
        write_sheet(args.sheet, data, start, t16)

    print(f"\nprompt fidelity, model {args.model}: {args.layouts} held-out layouts, probe trained on "
          f"{len(frames)} real frames ({args.probe_layouts} layouts)")
    print(f"{'frames':48s} {'floor':>6s} {'wall':>6s} {'mean':>6s} {'object':>7s} {'all 3':>6s} {'a box':>6s}")
    print(f"{'probe, held-out real frames of its own layouts':48s} {val_acc[0]:6.3f} {val_acc[1]:6.3f} "
          f"{val_acc[:2].mean():6.3f} {val_acc[2]:7.3f} {val_acc.mean():6.3f}          (exact labels)")
    for name, s in (("real start frames (ceiling)", real), ("generated from the sentence", gen),
                    ("dream t+16 (walk and turn)", gen_t16), ("no prompt (chance)", uncond)):
        print(f"{name:48s} {s['floor']:6.3f} {s['wall']:6.3f} {s['mean']:6.3f} {s['object']:7.3f} {s['mean_all']:6.3f} "
              f"{s['object_shown']:6.3f}")
    print(f"behind the camera (real start frame, then l x{len(TURN_AROUND_KEYS)}): the wall in view is the real one in "
          f"{behind_acc['prompt']:.3f} with the sentence, {behind_acc['no_prompt']:.3f} without "
          f"(probe on the real turned frames {behind_acc['real']:.3f})"
          + (f"; the view drawn behind at the start (the memory's) shows it in {behind_acc['view']:.3f}"
             if "view" in behind_acc else ""))
    print(f"one word changed: the probed floor follows the new floor colour in {floor_follows:.3f}; "
          f"odd prompts handled {odd_ok}/{len(ODD_PROMPTS)}")
    result = {
        "benchmark": "prompt_fidelity", "model": args.model, "quick": args.quick, "layouts": args.layouts,
        "probe_frames": int(len(frames)), "seconds": time.perf_counter() - t0,
        "attribute_accuracy": gen["mean"], "attribute_accuracy_real": real["mean"],
        "attribute_accuracy_t16": gen_t16["mean"], "attribute_accuracy_unconditional": uncond["mean"],
        "object_accuracy": gen["object"], "object_accuracy_real": real["object"], "object_accuracy_t16": gen_t16["object"],
        "object_accuracy_unconditional": uncond["object"],
        "attribute_accuracy_all": gen["mean_all"], "attribute_accuracy_all_real": real["mean_all"],
        "attribute_accuracy_all_t16": gen_t16["mean_all"],
        "probe_val_accuracy": {"floor": float(val_acc[0]), "wall": float(val_acc[1]), "object": float(val_acc[2])},
        "per_attribute": {"real": real, "generated": gen, "t16": gen_t16, "unconditional": uncond},
        "floor_swap_follows": floor_follows,
        "behind_wall_accuracy": behind_acc["prompt"], "behind_wall_accuracy_no_prompt": behind_acc["no_prompt"],
        "behind_wall_accuracy_real": behind_acc["real"], "behind_view_accuracy": behind_acc.get("view"),
        "odd_prompts_ok": odd_ok, "odd_prompts": len(ODD_PROMPTS),
        "gates": {"attribute_accuracy": {"value": gen["mean"], "target": 0.8, "met": gen["mean"] >= 0.8},
                  "attribute_accuracy_t16": {"value": gen_t16["mean"], "target": 0.7, "met": gen_t16["mean"] >= 0.7}},
        "machine": machine_info(),
    }
    write_result(rounded(result), args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
