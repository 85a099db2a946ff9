"""The 2.6 B models on this machine: the official SANA-WM DiT (diffusers) and our ``paper-2.6b``.

Measured (each heavy task in its own subprocess, so its peak RSS is its own):

1. Parameter counts on the ``meta`` device: the official ``SanaWMTransformer3DModel`` (default config = public
   release) and our ``WorldModelConfig.from_preset("paper-2.6b")``.
2. Official DiT, one denoise step of one 880-token latent frame (704x1280 -> 22x40) through
   ``SanaWMBackend.step`` (no CFG; CFG 5 doubles it), with a 1-frame context (sink only: the 9-frame clip) and an
   8-frame context (sink + 7 recent), random weights. A full-size step is out of reach here (2 shared cores, no
   native bf16), so the step is timed on full-width slices: 0 blocks (embedders, camera geometry, final layer),
   1 GDN block, 1 GDN + 1 softmax block; the 20-block figure ``t0 + 15 g + 5 s`` is labelled EXTRAPOLATED.
   bf16: the bf16/fp32 ratio of a narrow (width 560) GDN slice, both warmed up, times the fp32 estimate.
   ``--full-forward`` also builds the real 20-block fp32 model (10.6 GB) and times one step at the 1-frame context.
3. Loading a synthetic full-size bf16 DiT checkpoint (raw official key names, ~5.3 GB safetensors written to
   /tmp and deleted after) through ``neuralsim.sana_wm.load_transformer_safetensors``: peak RSS (goal <= 6.5 GB).
4. Our ``paper-2.6b`` causal streaming step (``neuralsim.model.WorldModel``), timed the same way on slices.

    python benchmarks/preset_2p6b.py [--quick]

``--quick`` (about a minute): parameter counts and tiny-width timings only. Last line: one JSON object, also
written to benchmarks/results/preset_2p6b.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TOKENS_HW = (22, 40)  # 704 x 1280 / 32
GIB = 1024**3


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is KiB on Linux


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


THREADS = [1]  # intra-op threads of the child processes (set from --threads)


def run_child(task: str, timeout: float = 900.0, **kwargs: Any) -> dict:
    """Run ``task`` in a fresh interpreter; returns its JSON (or an error record)."""
    cmd = [sys.executable, __file__, "--child", task, "--child-args", json.dumps(kwargs), "--threads", str(THREADS[0])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------
# Official DiT helpers
# ------------------------------------------------------------------------------------------------


def official_config(**overrides: Any) -> dict:
    from diffusers import SanaWMTransformer3DModel

    with _empty():
        cfg = dict(SanaWMTransformer3DModel().config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg.update(overrides)
    return cfg


class _empty:
    """Parameters on ``meta`` (accelerate), everything else as usual."""

    def __enter__(self):
        from accelerate import init_empty_weights

        self.ctx = init_empty_weights()
        return self.ctx.__enter__()

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def random_transformer(config: dict, dtype: Any) -> Any:
    """A ``SanaWMTransformer3DModel`` with cheap random weights: meta init, ``to_empty``, fill from a random pool."""
    import torch
    from diffusers import SanaWMTransformer3DModel

    with _empty():
        model = SanaWMTransformer3DModel.from_config(config)
    model = model.to(dtype).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    pool = (torch.randn(1 << 22, generator=gen) * 0.02).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat, offset = p.view(-1), 0
            if "norm" in name and name.endswith("weight"):
                flat.fill_(1.0)
                continue
            while offset < flat.numel():
                n = min(pool.numel(), flat.numel() - offset)
                flat[offset:offset + n] = pool[:n]
                offset += n
            pool = pool.roll(12345)
    return model.eval()


def official_backend(transformer: Any, context: int) -> tuple[Any, Any]:
    """A ``SanaWMBackend`` around ``transformer`` (with a tiny VAE that never runs) and a synthetic state."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKLLTX2Video

    from neuralsim.sana_wm import SanaWMBackend, SanaWMState

    c = transformer.config.in_channels
    vae = AutoencoderKLLTX2Video(
        latent_channels=c, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    ).to(transformer.dtype)
    backend = SanaWMBackend(transformer, vae, image_size=(704, 1280), context_frames=max(1, context - 1),
                            denoise_steps=1, guidance_scale=1.0)
    gen = torch.Generator().manual_seed(0)
    h, w = TOKENS_HW
    poses = np.broadcast_to(np.eye(4), (1, 1 + 8 * (context - 1), 4, 4))
    raymap, plucker = backend._camera(poses)
    width = transformer.config.caption_channels
    state = SanaWMState(
        latents=torch.randn(1, c, context, h, w, generator=gen).to(transformer.dtype), raymap=raymap, plucker=plucker,
        c2w=np.eye(4)[None], pitch=np.zeros(1), sink_pending=False, step_index=0,
        prompt_embeds=torch.randn(1, 1, 300, width, generator=gen).to(transformer.dtype),
        prompt_mask=torch.ones(1, 300, dtype=torch.long), negative_embeds=None, negative_mask=None,
    )
    return backend, state


def time_step(backend: Any, state: Any, repeats: int) -> float:
    import torch

    gen = torch.Generator().manual_seed(1)
    best = float("inf")
    if repeats > 1:
        backend.step(state, 1, generator=gen)  # warm-up (allocator, first-call setup)
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.step(state, 1, generator=gen)
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------------------------------------
# Child tasks (each prints one JSON line)
# ------------------------------------------------------------------------------------------------


SLICES = {"embed": dict(num_layers=0), "gdn": dict(num_layers=1), "pair": dict(num_layers=2, softmax_every_n=2)}


def child_official_slices(dtype: str, width: int | None, jobs: list[list], repeats: int, warmup: bool) -> dict:
    """Step time of DiT slices: ``embed`` (0 blocks), ``gdn`` (1 GDN block), ``pair`` (1 GDN + 1 softmax block).

    Args:
        jobs: ``[slice, context]`` pairs; each slice model is built once.
        warmup: one untimed step per job first (bf16 on CPU spends seconds creating kernels on a first call).
    """
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    slim = {} if width is None else {"hidden_size": width, "num_attention_heads": width // 112 or 1,
                                     "linear_head_dim": 112 if width >= 112 else width}
    out: dict[str, Any] = {}
    for name in dict.fromkeys(j[0] for j in jobs):
        model = random_transformer(official_config(**slim, **SLICES[name]), dt)
        for _, context in (j for j in jobs if j[0] == name):
            backend, state = official_backend(model, context)
            if warmup:
                time_step(backend, state, 1)
            out[f"{name}@{context}"] = time_step(backend, state, repeats)
        del model
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def extrapolate(t: dict, context: int) -> dict:
    """20 blocks = 15 GDN + 5 softmax; from slices (``embed``, ``gdn``, ``pair``) at one context."""
    t0, pair = t[f"embed@{context}"], t[f"pair@{context}"]
    out: dict[str, Any] = {"pair_s": pair - t0}
    if f"gdn@{context}" in t:
        g = t[f"gdn@{context}"] - t0
        s = pair - t[f"gdn@{context}"]
        out.update(gdn_block_s=g, gdn_slice_blocks20_s=t0 + 20 * g)
        if s > 0:  # single-shot timings on a busy machine can make the difference meaningless
            return {**out, "softmax_block_s": s, "blocks20_s": t0 + 15 * g + 5 * s, "basis": "GDN and softmax slices"}
    # The two block kinds have the same parameter count (130.76 M vs 130.75 M): 20 blocks = 10 pairs.
    return {**out, "blocks20_s": t0 + 10 * (pair - t0), "basis": "GDN+softmax pair slice x 10"}


def child_official_full(dtype: str, context: int, overrides: dict | None = None) -> dict:
    """Build the full-size DiT with random weights and time one real step."""
    import torch

    from neuralsim.sana_wm import param_count

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    t0 = time.perf_counter()
    model = random_transformer(official_config(**(overrides or {})), dt)
    build = time.perf_counter() - t0
    rss_weights = peak_rss_gb()
    backend, state = official_backend(model, context)
    step = time_step(backend, state, 1)
    return {"build_s": build, "params": param_count(model), "rss_after_build_gb": rss_weights, "step_s": step,
            "peak_rss_gb": peak_rss_gb()}


def child_write_checkpoint(path: str, overrides: dict | None = None) -> dict:
    """Stream a synthetic full-size bf16 DiT in raw official layout to ``path`` (one tensor in memory at a time)."""
    import torch
    from diffusers import SanaWMTransformer3DModel

    with _empty():
        model = SanaWMTransformer3DModel.from_config(official_config(**(overrides or {})))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    renames = {"t_embedder.linear_1.": "t_embedder.mlp.0.", "t_embedder.linear_2.": "t_embedder.mlp.2."}
    raw = {}
    for k, shape in shapes.items():
        for new, old in renames.items():
            k = k.replace(new, old)
        raw[k] = shape
    raw["pos_embed"] = (1, TOKENS_HW[0] * TOKENS_HW[1], 2240)  # the fixed buffer diffusers drops
    header, offset = {}, 0
    for k, shape in raw.items():
        n = 2 * int(torch.Size(shape).numel())
        header[k] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    pool = (torch.randn(1 << 24, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    pool_bytes = pool.view(torch.uint8).numpy().tobytes()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for meta in header.values():
            n = meta["data_offsets"][1] - meta["data_offsets"][0]
            while n > 0:
                chunk = min(n, len(pool_bytes))
                f.write(pool_bytes[:chunk])
                n -= chunk
    return {"bytes": os.path.getsize(path), "write_s": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb()}


def child_load_checkpoint(path: str, overrides: dict | None = None) -> dict:
    import torch

    from neuralsim.sana_wm import load_transformer_safetensors, param_count

    t0 = time.perf_counter()
    model = load_transformer_safetensors(path, official_config(**(overrides or {})), dtype=torch.bfloat16)
    elapsed = time.perf_counter() - t0
    # Read every byte (as a forward or a .to("cuda") would), so lazily mapped pages count in the RSS.
    touched = sum(int(p.detach().view(-1).view(torch.int16).max()) for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters()) and isinstance(touched, int)
    return {"load_s": elapsed, "params": param_count(model), "peak_rss_gb": peak_rss_gb(),
            "rope_ok": bool(model.rope.freqs.device.type == "cpu" and model.rope.freqs.numel() > 0)}


def child_paper_slices(width: int | None, repeats: int) -> dict:
    """Our causal streaming step on a paper-2.6b slice (depth 1, one GDN block), one denoise step + commit."""
    import numpy as np
    import torch

    from neuralsim.config import WorldModelConfig
    from neuralsim.model import WorldModel

    base = WorldModelConfig.from_preset("paper-2.6b")
    slim = {} if width is None else {"width": width, "num_heads": max(1, width // 112)}
    torch.manual_seed(0)  # a script: global seeding is fine here
    model = WorldModel(base.replace(depth=1, softmax_blocks=(), **slim)).eval()
    gen = torch.Generator().manual_seed(0)
    state = model.init_state(1, generator=gen, denoise_steps=1)
    box = model.config.action_spec["type"] == "box"
    action = np.zeros((1, model.config.action_dim), dtype=np.float32) if box else np.zeros(1, dtype=np.int64)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.step(state, action, generator=gen, denoise_steps=1)
        best = min(best, time.perf_counter() - t0)
    steps = base.denoise_steps
    return {"depth1_step_1denoise_s": best, "preset_denoise_steps": steps,
            # (steps denoise + 1 commit) forwards of 20 blocks vs (1 + 1) forwards of 1 block; overheads counted 20x
            "extrapolated_20_blocks_upper_s": best * 20 * (steps + 1) / 2, "peak_rss_gb": peak_rss_gb()}


CHILDREN = {
    "official_slices": child_official_slices,
    "official_full": child_official_full,
    "write_checkpoint": child_write_checkpoint,
    "load_checkpoint": child_load_checkpoint,
    "paper_slices": child_paper_slices,
}


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def param_counts() -> dict:
    out: dict[str, Any] = {}
    try:
        from diffusers import SanaWMTransformer3DModel

        from neuralsim.sana_wm import param_count

        with _empty():
            model = SanaWMTransformer3DModel()
        blocks = model.blocks
        out["official_dit"] = param_count(model)
        out["official_gdn_block"] = param_count(blocks[0])
        out["official_softmax_block"] = param_count(blocks[3])
        out["official_bf16_weights_gb"] = 2 * out["official_dit"] / GIB
    except Exception as exc:  # diffusers missing: the [sana] extra
        out["official_dit"] = f"not available ({exc})"
    try:
        from neuralsim.model import describe

        d = describe("paper-2.6b")
        out["paper_2p6b_total"] = d["parameters"]["total"]
        out["paper_2p6b_dynamics"] = d["parameters"]["dynamics"]
        out["paper_2p6b_state_bytes_per_env"] = d["state_bytes_per_env_fp32"]
    except Exception as exc:
        out["paper_2p6b_total"] = f"not available ({type(exc).__name__}: {exc})"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="parameter counts + tiny-width timings (~1 min)")
    parser.add_argument("--full-forward", action="store_true",
                        help="also build the real 20-block fp32 DiT (10.6 GB) and time one step (minutes here)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads per measurement (default 1: on a shared 2-core box, 2 threads "
                             "oversubscribe and time 3-10x worse and erratically)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps(CHILDREN[args.child](**json.loads(args.child_args))))
        return
    THREADS[0] = args.threads

    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "preset_2p6b", "quick": bool(args.quick), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
        "load_average_at_start": os.getloadavg()[0], "cpu_count": os.cpu_count(),
        "tokens_per_latent_frame": TOKENS_HW[0] * TOKENS_HW[1],
    }
    result["params"] = param_counts()
    rows: list[tuple[str, str, str]] = []
    p = result["params"]
    rows.append(("official DiT parameters (meta)", f"{p.get('official_dit')}", "counted"))
    rows.append(("paper-2.6b parameters (meta)", f"{p.get('paper_2p6b_total')}", "counted"))

    # --- official DiT step ---------------------------------------------------------------------
    width = 96 if args.quick else None
    label = "tiny width 96" if args.quick else "full width 2240"
    jobs = [["embed", 1], ["gdn", 1], ["pair", 1], ["embed", 8], ["pair", 8]]
    r = result["official_fp32"] = run_child("official_slices", dtype="fp32", width=width, jobs=jobs,
                                            repeats=3 if args.quick else 1, warmup=args.quick)
    if "error" in r:
        rows.append(("official DiT step fp32", "error", r["error"]))
    else:
        for c in (1, 8):
            e = result[f"official_fp32_ctx{c}"] = extrapolate(r, c)
            if "gdn_block_s" in e:
                rows.append((f"official step fp32, ctx {c}: 1 GDN block", f"{e['gdn_block_s']:.2f} s", f"measured, {label}"))
            rows.append((f"official step fp32, ctx {c}: GDN+softmax pair", f"{e['pair_s']:.2f} s", f"measured, {label}"))
            rows.append((f"official step fp32, ctx {c}: embed/camera/final", f"{r[f'embed@{c}']:.2f} s", f"measured, {label}"))
            rows.append((f"official step fp32, ctx {c}: 20 blocks", f"{e['blocks20_s']:.1f} s", f"EXTRAPOLATED ({e['basis']})"))
    # bf16 vs fp32 on the same (narrow) GDN slice, both warmed up; full-width bf16 = ratio x full-width fp32.
    ratio_width = 96 if args.quick else 560
    jobs = [["embed", 1], ["gdn", 1]]
    rb = run_child("official_slices", dtype="bf16", width=ratio_width, jobs=jobs, repeats=1, warmup=True)
    rf = run_child("official_slices", dtype="fp32", width=ratio_width, jobs=jobs, repeats=1, warmup=True)
    result["official_bf16_vs_fp32_slice"] = {"width": ratio_width, "bf16": rb, "fp32": rf}
    if "error" in rb or "error" in rf:
        rows.append(("official step bf16", "error", rb.get("error") or rf.get("error")))
    else:
        ratio = rb["gdn@1"] / rf["gdn@1"]
        result["official_bf16_vs_fp32_slice"]["ratio"] = ratio
        rows.append((f"bf16 / fp32 step time, width-{ratio_width} GDN slice, ctx 1", f"{ratio:.1f}x",
                     f"measured ({rb['gdn@1']:.2f} s vs {rf['gdn@1']:.2f} s)"))
        if "official_fp32_ctx1" in result:
            est = ratio * result["official_fp32_ctx1"]["blocks20_s"]
            result["official_bf16_ctx1_blocks20_s"] = est
            rows.append(("official step bf16, ctx 1: 20 blocks", f"{est:.0f} s", "EXTRAPOLATED (ratio x fp32 estimate)"))

    if args.full_forward and not args.quick:
        if mem_available_gb() > 15.0:
            r = result["official_full_fp32_ctx1"] = run_child("official_full", dtype="fp32", context=1, timeout=1800)
            if "error" not in r:
                rows.append(("official step fp32, ctx 1, real 20-block model", f"{r['step_s']:.1f} s", f"measured; build {r['build_s']:.0f} s, {r['params']} params"))
                rows.append(("  peak RSS (fp32 weights + step)", f"{r['peak_rss_gb']:.2f} GB", "measured"))
            else:
                rows.append(("official step fp32, real 20-block model", "error", r["error"]))
        else:
            result["official_full_fp32_ctx1"] = {"skipped": f"MemAvailable {mem_available_gb():.1f} GB < 15 GB"}

    if not args.quick:
        tmp = Path(tempfile.gettempdir()) / "neuralsim_sana_wm_synthetic_dit.safetensors"
        try:
            w = run_child("write_checkpoint", path=str(tmp))
            ld = run_child("load_checkpoint", path=str(tmp)) if "error" not in w else {"error": "no checkpoint"}
        finally:
            tmp.unlink(missing_ok=True)
        result["load_bf16_checkpoint"] = {"write": w, "load": ld}
        if "error" not in ld:
            rows.append(("load synthetic bf16 DiT checkpoint", f"{ld['load_s']:.1f} s, peak RSS {ld['peak_rss_gb']:.2f} GB",
                         f"measured; file {w['bytes'] / 1e9:.2f} GB, goal <= 6.5 GB"))
        else:
            rows.append(("load synthetic bf16 DiT checkpoint", "error", ld["error"]))

    paper_width = 224 if args.quick else None
    r = result["paper_2p6b_step"] = run_child("paper_slices", width=paper_width, repeats=2 if args.quick else 1)
    if "error" in r:
        rows.append(("paper-2.6b streaming step", "not available", r["error"]))
    else:
        plabel = "width 224" if args.quick else "full width 2240"
        rows.append(("paper-2.6b step, 1 GDN block, 1 denoise + commit", f"{r['depth1_step_1denoise_s']:.2f} s", f"measured, {plabel}"))
        rows.append((f"paper-2.6b step, 20 blocks, {r['preset_denoise_steps']} denoise + commit",
                     f"<= {r['extrapolated_20_blocks_upper_s']:.0f} s", f"EXTRAPOLATED upper bound, {plabel}"))

    result["wall_s"] = time.perf_counter() - started
    print(f"{'measurement':<58} {'value':<28} note")
    for name, value, note in rows:
        print(f"{name:<58} {value:<28} {note}")
    from neuralsim.checkpoints import atomic_write_text

    name = "preset_2p6b_quick.json" if args.quick else "preset_2p6b.json"
    atomic_write_text(RESULTS / name, json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
