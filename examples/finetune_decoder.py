"""Fine-tune a trained model's decoder alone, with the encoder frozen, and save a copy of the model.

    OMP_NUM_THREADS=1 python examples/finetune_decoder.py --model runs/default/model --data runs/default/data \
        --steps 2000 --out runs/default/decoder

The dynamics only ever sees the encoder's latents, so a decoder trained further on the same frozen
latents improves every decoded frame of the dream without retraining the dynamics: the recipe runs this
beside the dynamics stage (one CPU core each) and `--merge DYNAMICS_DIR` writes the dynamics checkpoint
with this decoder into `--out`. Loss: the autoencoder's own (`WorldModel.autoencoder_loss`). Resumable
only from scratch (a short job); the output is written atomically by `save_pretrained`.

`--decoder-blocks 1,0,1,1` grows the decoder first: residual blocks per level (8x8, 16x16, 32x32, 64x64 for the
default model) beyond the model's own are added with their last conv at zero, so the grown decoder draws exactly
what the old one did until it trains. The shipped model's decoder was grown so (README "The shipped default model").

`--object-weight 4` weighs the pixels of the task objects 1 + 4 times in the loss (then mean 1): at 64x64 a ball or
a box is a few dozen pixels, mostly edges, which the plain loss spends little on. The dataset stores no object
masks, so the frames come from a fresh collection (`--object-frames`, episode seeds from `--object-seed`, 520,000:
none of the dataset's, the transfer benchmark's held-out layouts from 500,000 or the fidelity benchmark's from
1,000,000) of the dataset's env under its policy, with each frame's mask
from the env's `object_mask()` (the room's: MuJoCo's segmentation render of the same camera and state).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch

import neuralsim.envs  # noqa: F401  (registers the envs a dataset names)
from neuralsim.checkpoints import read_start_frames, write_start_frames
from neuralsim.data import Dataset, frames_with_labels
from neuralsim.model import WorldModel

# Above the collection's small seeds and the transfer benchmark's held-out layouts (500,000 + 1,000 per seed + 20),
# below the fidelity benchmark's 1,000,000.
OBJECT_SEED = 520_000


def collect_object_frames(data: str, count: int, first_seed: int = OBJECT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames ``[N, H, W, 3]`` uint8 of ``data``'s env under its collection policy, and their object masks
    ``[N, H, W]`` bool from the env's ``object_mask()``; episodes of the dataset's length, seeds ``first_seed``,
    ``first_seed + 1``, ..."""
    try:
        return frames_with_labels(data, "object_mask", count, first_seed)
    except ValueError as e:
        raise SystemExit(f"error: --object-weight: {e}") from None


def parse_blocks(text: str, current: tuple[int, ...]) -> tuple[int, ...]:
    """``"1,0,1,1"`` → ``(1, 0, 1, 1)``, one count per decoder level, none below the model's own."""
    try:
        blocks = tuple(int(b) for b in text.split(","))
    except ValueError:
        blocks = ()
    if len(blocks) != len(current) or any(b < c for b, c in zip(blocks, current)):
        raise SystemExit(f"error: --decoder-blocks must be {len(current)} comma-separated ints, each at least the "
                         f"model's ({','.join(map(str, current))}), got {text!r}")
    return blocks


def grow_decoder(model: WorldModel, blocks: tuple[int, ...], seed: int = 0) -> WorldModel:
    """A copy of ``model`` whose decoder has ``blocks`` residual blocks per level: the old layers keep their weights
    (a level's upsampling conv moves behind its new blocks), each new block's last conv starts at zero, so the
    copy decodes exactly as ``model`` does; the new blocks' other weights are drawn from ``seed``."""
    old = tuple(model.config.ae_decoder_blocks)
    with torch.random.fork_rng(devices=[]):  # torch's start-up seed is random: the init from ``seed`` alone
        torch.manual_seed(seed)
        grown = WorldModel(model.config.replace(ae_decoder_blocks=list(blocks)))
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if key.startswith("autoencoder.decoder.levels.") and int(parts[4]) >= old[int(parts[3])]:
            parts[4] = str(int(parts[4]) + blocks[int(parts[3])] - old[int(parts[3])])  # behind the new blocks
        state[".".join(parts)] = value
    for key, value in grown.state_dict().items():
        if key not in state:  # a new block: its init, with the last conv at zero (identity)
            state[key] = torch.zeros_like(value) if ".conv2." in key else value
    grown.load_state_dict(state, strict=True)
    return grown.train(model.training)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model directory (its encoder stays frozen)")
    parser.add_argument("--data", help="the dataset the model was trained on (needed unless --merge-only)")
    parser.add_argument("--out", required=True, type=Path, help="where the model with the fine-tuned decoder goes")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edge-weight", type=float, default=None,
                        help="weight of edge pixels in the loss (default: the model's ae_edge_weight)")
    parser.add_argument("--latent-noise", type=float, default=0.05,
                        help="Gaussian noise on the latents, as a fraction of their std (robustness to dreamed latents)")
    parser.add_argument("--merge", default=None, help="a dynamics checkpoint dir: save IT with this decoder instead")
    parser.add_argument("--merge-only", action="store_true", help="no training: merge --model's decoder into --merge")
    parser.add_argument("--object-weight", type=float, default=0.0,
                        help="extra weight of the task objects' pixels (from the env's object_mask()); > 0 trains on "
                             "a fresh collection of --data's env instead of --data's frames")
    parser.add_argument("--object-frames", type=int, default=32768,
                        help="frames collected for --object-weight (default 32768)")
    parser.add_argument("--object-seed", type=int, default=OBJECT_SEED,
                        help=f"seed of the first episode collected for --object-weight (default {OBJECT_SEED:,})")
    parser.add_argument("--decoder-blocks", default=None,
                        help="comma-separated residual blocks per decoder level, each >= the model's (new ones start "
                             "as the identity), e.g. 1,0,1,1")
    args = parser.parse_args()

    model = WorldModel.from_pretrained(args.model)
    if args.decoder_blocks is not None:
        model = grow_decoder(model, parse_blocks(args.decoder_blocks, model.config.ae_decoder_blocks), seed=args.seed)
    if not args.merge_only:
        if not args.data:
            raise SystemExit("error: --data is required unless --merge-only")
        torch.manual_seed(args.seed)
        model.train()
        model.requires_grad_(False)
        decoder = model.autoencoder.decoder
        decoder.requires_grad_(True)
        opt = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=0.0)
        if args.object_weight < 0 or not math.isfinite(args.object_weight):
            raise SystemExit(f"error: --object-weight must be a finite number >= 0, got {args.object_weight}")
        if args.object_weight > 0:
            if args.object_frames < args.batch_size:
                raise SystemExit(f"error: --object-frames must be at least --batch-size ({args.batch_size}), "
                                 f"got {args.object_frames}")
            pool, pool_masks = collect_object_frames(args.data, args.object_frames, args.object_seed)
            print(f"collected {len(pool)} frames, {pool_masks.mean():.2%} of their pixels objects")
            rng = np.random.default_rng(10_000 + args.seed)

            def next_batch() -> tuple[torch.Tensor, torch.Tensor | None]:
                i = rng.choice(len(pool), args.batch_size, replace=False)
                weight = 1.0 + args.object_weight * pool_masks[i].astype(np.float32)
                return torch.from_numpy(pool[i][:, None]), torch.from_numpy(weight[:, None])
        else:
            batches = Dataset(args.data).iter_windows(steps=1, batch_size=args.batch_size, seed=10_000 + args.seed)

            def next_batch() -> tuple[torch.Tensor, torch.Tensor | None]:
                return torch.from_numpy(next(batches)["frames"]), None
        g = torch.Generator().manual_seed(args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        log = (args.out / "decoder_finetune.csv").open("w", newline="")
        writer = csv.writer(log)
        writer.writerow(["step", "loss", "psnr", "lr", "seconds"])
        t0 = time.perf_counter()
        for step in range(args.steps):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))  # cosine to 0
            for group in opt.param_groups:
                group["lr"] = lr
            frames, pixel_weight = next_batch()
            loss, logs = model.autoencoder_loss(frames, generator=g, latent_noise=args.latent_noise,
                                                edge_weight=args.edge_weight, pixel_weight=pixel_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            if step % 10 == 0 or step == args.steps - 1:
                writer.writerow([step, f"{logs['loss']:.5f}", f"{logs['psnr']:.3f}", f"{lr:.2e}",
                                 f"{time.perf_counter() - t0:.1f}"])
                log.flush()
        log.close()
        model.eval()
        # what made this decoder, after what made the one it started from (a chain of fine-tunes stays readable)
        run = {"from": str(args.model), "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
               "seed": args.seed, "edge_weight": args.edge_weight, "latent_noise": args.latent_noise,
               **({"object_weight": args.object_weight, "object_frames": args.object_frames,
                   "object_seed": args.object_seed}
                  if args.object_weight > 0 else {}),
               "decoder_blocks": list(model.config.ae_decoder_blocks)}
        before = model.config.provenance.get("decoder_finetune")
        model.config = model.config.replace(provenance={**model.config.provenance, "decoder_finetune": {
            **run, **({"before": before} if before else {})}})
    target = WorldModel.from_pretrained(args.merge) if args.merge else model
    if args.merge:
        # the decoder maps raw (un-normalised) latents to pixels, so only the encoder must be the same; the latent
        # normalisation (set when the dynamics stage starts) lives outside it
        enc_a = model.autoencoder.encoder.state_dict()
        enc_b = target.autoencoder.encoder.state_dict()
        if any(not torch.equal(enc_a[k], enc_b[k]) for k in enc_a):
            raise SystemExit("error: --merge's model has another encoder: its dynamics learned other latents")
        if tuple(target.config.ae_decoder_blocks) != tuple(model.config.ae_decoder_blocks):  # a grown decoder
            target = grow_decoder(target, tuple(model.config.ae_decoder_blocks))
        target.autoencoder.decoder.load_state_dict(model.autoencoder.decoder.state_dict())
        provenance = {**target.config.provenance, "decoder_finetune": model.config.provenance.get("decoder_finetune")}
        target.config = target.config.replace(provenance=provenance)
    target.save_pretrained(args.out)
    frames, descriptions = read_start_frames(args.merge or args.model)
    if len(frames):  # the start set the envs reset from travels with the model
        write_start_frames(args.out, frames, descriptions or [""] * len(frames))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
