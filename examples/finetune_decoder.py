"""Fine-tune a trained model's decoder alone, with the encoder frozen, and save a copy of the model.

    OMP_NUM_THREADS=1 python examples/finetune_decoder.py --model runs/default/model --data runs/default/data \
        --steps 2000 --out runs/default/decoder

The dynamics only ever sees the encoder's latents, so a decoder trained further on the same frozen
latents improves every decoded frame of the dream without retraining the dynamics: the recipe runs this
beside the dynamics stage (one CPU core each) and `--merge DYNAMICS_DIR` writes the dynamics checkpoint
with this decoder into `--out`. Loss: the autoencoder's own (`WorldModel.autoencoder_loss`). Resumable
only from scratch (a short job); the output is written atomically by `save_pretrained`.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch

from neuralsim.checkpoints import read_start_frames, write_start_frames
from neuralsim.data import Dataset
from neuralsim.model import WorldModel


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
    args = parser.parse_args()

    model = WorldModel.from_pretrained(args.model)
    if not args.merge_only:
        if not args.data:
            raise SystemExit("error: --data is required unless --merge-only")
        torch.manual_seed(args.seed)
        model.train()
        model.requires_grad_(False)
        decoder = model.autoencoder.decoder
        decoder.requires_grad_(True)
        opt = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=0.0)
        batches = Dataset(args.data).iter_windows(steps=1, batch_size=args.batch_size, seed=10_000 + args.seed)
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
            frames = torch.from_numpy(next(batches)["frames"])
            loss, logs = model.autoencoder_loss(frames, generator=g, latent_noise=args.latent_noise,
                                                edge_weight=args.edge_weight)
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
    target = WorldModel.from_pretrained(args.merge) if args.merge else model
    if args.merge:
        # the decoder maps raw (un-normalised) latents to pixels, so only the encoder must be the same; the latent
        # normalisation (set when the dynamics stage starts) lives outside it
        enc_a = model.autoencoder.encoder.state_dict()
        enc_b = target.autoencoder.encoder.state_dict()
        if any(not torch.equal(enc_a[k], enc_b[k]) for k in enc_a):
            raise SystemExit("error: --merge's model has another encoder: its dynamics learned other latents")
        target.autoencoder.decoder.load_state_dict(model.autoencoder.decoder.state_dict())
        provenance = {**target.config.provenance, "decoder_finetune": {
            "from": str(args.model), "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
            "seed": args.seed, "edge_weight": args.edge_weight, "latent_noise": args.latent_noise}}
        target.config = target.config.replace(provenance=provenance)
    target.save_pretrained(args.out)
    frames, descriptions = read_start_frames(args.merge or args.model)
    if len(frames):  # the start set the envs reset from travels with the model
        write_start_frames(args.out, frames, descriptions or [""] * len(frames))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
