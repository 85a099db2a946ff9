"""The recipe of the shipped default model: collect the MuJoCo room, train the autoencoder and the dynamics, install.

    OMP_NUM_THREADS=1 python examples/make_default_model.py --out runs/default --install

(One torch thread per job: on a 2-core machine two threads competing with the collection workers or anything
else are far slower.) The default schedule (`--schedule fast`, the shipped model's since 2026-12-04; README "the
shipped default model"): collect 400 episodes of NeuralSimRoom-v0 with the `explore` policy → the 8× autoencoder
(1,800 steps, two threads) → then on the first core a fresh dynamics with every shipped field from its first update
(`FAST_CONFIG`: one network pass per env step, the frame memory with the "seen" gate, a depth net of width 32 and
three real context frames held) trained by three streaming stages (`FAST_STAGES`: 600 steps on windows of 6, 300
on windows of 16, 400 on windows of 64 after a burn-in of 48, every target frame trained as it is sampled), then the
autoencoder's decoder grown (residual blocks at 32×32 and 64×64 pixels, `--decoder-blocks 1,0,1,1`) and
fine-tuned (`FAST_DECODER`: 2,000 steps, then 1,000 with the task objects' pixels weighted up); on the second core, one after another, the parts that
read only the encoder, each from the fresh model: the target tracker (`neuralsim train reward --reward-kind target`,
`--fast-reward-steps` 3,000 on 1,280 episodes of the room's default task, 30 % of the windows ending at a success;
README, "reward prediction"; `--reward-episodes 0` leaves the dynamics' heads), the depth net on the room's true
depth (`FAST_DEPTH`) and the prompt-start generator (`neuralsim train prompt`, `--fast-prompt-steps` 1,500 on the
first frames of 20,000 one-step episodes and their descriptions), then from the prompt start's model the view
generator (`neuralsim train views`, `--view-steps` 5,000 on pairs of frames of 15,000 episodes of the room turned
half a turn on the spot, `--policy turn`; since 2026-12-05, not in the 109.6-minute run below); all merged at the end (OUT/final_fast; its start
set the first frames of the tracker's episodes, the task's), then the data's camera servo set in its config
(`set_camera_servo`: the frame memory's warp follows the camera as the room moves it); last, on 1,500 episodes of
the room's default task under the explore, scripted and sticky-random policies, the dream from one frame
(`ONE_FRAME_STAGES`, `--one-frame-stages 2`: streaming stages of 400 steps on windows of 48 from one real frame, mostly
the model's own history with the gradient through it, the first on those episodes, the second on 1,500 more that walk
into walls, `--one-frame-policy explore,scripted,keys,keys`) and then, from that finished model, the
frame memory's floor net (`examples/finetune_floor.py`, `FLOOR_FIELDS`, merged in as OUT/final_floor; since
2026-12-06, late, not in the run below) and the termination detector (`neuralsim train termination`,
`--termination-steps` 4,000 on 4,096 windows of its own dreams
of the walk-into-walls episodes, `--termination-detector-data one_frame_data`, merged in as OUT/final_termination;
since 2026-12-05 / 06, not in the run below). End to end on this project's 2-core AVX2 EPYC: 109.6
min (README, "the shipped default model"), every part bit for bit the shipped model's but the grown decoder, whose
new blocks' init was unseeded then.

`--schedule parallel` is the chain that made the model shipped before 2026-12-04 (about 10 h 45 min): the dynamics
(2,000 steps, windows of 6) → 300 self-forcing steps → twelve streaming stages (`STREAMING_STAGES`, windows of 6 to
64, more and more of the model's own history and of still windows, the changes-only refiner from the fifth, one
network pass per env step from the ninth, the gradient through the model's own history in the last two) → the grown
decoder (`DECODER_GROWTH`) → the tracker (12,000 steps) → the prompt start → the frame memory's gate and depth
stages (`DEPTH_LABEL_STAGES`); the decoder fine-tune runs on the second core beside it. What was tried and not
shipped (15 % still windows in the parallel stages, 600 self-forcing steps, the `prev_frame_warp` switch, 2 denoise
steps): docs/experiments.md, "what was tried".

`--schedule from-start` replaces everything between the autoencoder and the prompt start by streaming training from
a fresh dynamics (`FROM_START_STAGES`: 1,200 steps on windows of 6 at lr 1e-3, then 500 on windows of 16 with mostly
the model's own history, still and stopping windows, then 400 on windows of 64 after a burn-in of 48), with the decoder fine-tune and then the prompt start on the
second core beside it (the prompt start from the fresh model: it reads only the encoder's latents).

The training stages are `neuralsim train autoencoder`, `neuralsim train dynamics` into the same directory (the
computation of `train all`), then `neuralsim train dynamics --init OUT/model --self-forcing 0.5 ...` and
`neuralsim train dynamics --init ... --streaming --own-history ...`; this script runs them in-process with the
same options. Each is resumable (`--resume`): collection continues at the next episode, training from its last
checkpoint with the same data order, so a killed run picks up where it stopped (the decoder fine-tune, a
20-minute job, restarts). With `--install` the final model (config.json + model.safetensors +
start_frames.safetensors, weights in fp16) is copied into neuralsim/assets/default/, which is what
`gym.make("SanaWM-v0")` loads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuralsim.device import bf16_is_native


@dataclass(frozen=True)
class StreamingStage:
    """One stage of streaming training (`neuralsim train dynamics --streaming`): every frame trained as it is sampled."""

    steps: int
    window: int
    batch_size: int
    lr: float
    warmup: int
    own_history: float  # chance a committed frame is the model's own one-step sample
    one_step_fraction: float  # share of target frames at tau = 1
    still_windows: float
    config: tuple[tuple[str, Any], ...] = ()  # model config fields the stage sets (`--set`), e.g. adding the refiner
    seed_offset: int = 0  # added to the recipe's seed (a stage that repeats the last one's windows draws others)
    burn_in: int = 0  # the window's first real frames only build the state (long contexts; `--burn-in`)
    stop_windows: float = 0.0  # windows that stop partway: moving, then the last frame held (`--stop-windows`)
    own_history_grad: bool = False  # backpropagate through the model's own history (`--own-history-grad`)
    dtype: str | None = None  # the stage's `--dtype` (None: the recipe's)
    data: str | None = None  # the stage's own dataset, a directory under OUT (None: the one its caller names)


@dataclass(frozen=True)
class DepthLabelStage:
    """One `examples/finetune_depth.py` run: the frame memory's depth net on the room's true depth."""

    steps: int
    lr: float
    policies: tuple[str, ...]  # the collection policies its frames are split over
    frames: int | None = None  # None: the recipe's memory_depth_label_frames
    width: int = 0  # > 0: a fresh depth net of this width replaces the model's (0: fine-tune it)
    edge_weight: float = 0.0  # extra loss weight within a pixel of a depth edge
    object_weight: float = 0.0  # extra loss weight on the task objects' pixels (the room's object_mask())
    flip: bool = False  # mirror half of each batch
    regate: bool = True  # then the gate's net retrained on it, held fixed (`memory_regate_steps`)


# What `train --dtype auto` meant before it trained in fp32 on every CPU (`neuralsim.train.training_dtype`).
BF16_WHERE_NATIVE = "bfloat16" if bf16_is_native("cpu") else "float32"

# Eight stages, each from the last: longer windows, more of the model's own history, more still windows; the fifth adds
# the changes-only refiner (zero-initialised: it starts as the model before it), the sixth repeats it on other windows
# at a lower rate, the seventh trains 16 frames after a burn-in of 48 (windows of 64: the context a long dream has), the
# eighth adds windows that stop partway (still windows start still; the idle test lets go of the keys while moving).
# The shipped run measured each (docs/experiments.md, "what was tried"); they are the steps of that run, not a tuned
# schedule.

# The frame memory's depth net on the room's true depth. First the views of the data's policy, then half of them
# sticky-random (pitched, close to walls: where the photometric depth was worst), each followed by the gate; then a
# fresh net of twice the width in its place, on four times the frames, edges and objects weighted 1 + 4, mirrored
# (depth AbsRel explore / sticky 0.14 / 0.19 -> 0.11 / 0.16; docs/experiments.md, "Depth for the memory"). No gate
# follows the last:
# the installed config's gate ("seen") does not run the net, and retraining it on this depth gave nothing with the
# learned gate either. The steps of the shipped run, not a tuned schedule: 9,000 steps on the mix from the start, then
# one gate, came out behind the first two on the quick benchmark.
DEPTH_LABEL_STAGES = (
    DepthLabelStage(6000, 1e-3, ("explore",)),
    DepthLabelStage(3000, 5e-4, ("explore", "sticky")),
    DepthLabelStage(6000, 1e-3, ("explore", "sticky"), frames=131072, width=32, edge_weight=4.0, object_weight=4.0,
                    flip=True, regate=False),
)

# The ball of every collection the recipe makes: thrown, the room's default until 2026-12-07 (the default task is now the
# ball at rest). The shipped model's dynamics, tracker, detector and start set all learned from thrown balls, and the
# recipe reproduces it; `neuralsim eval transfer` scores agents on the env's TRANSFER_TASK (at rest) either way.
RECIPE_BALL = {"ball_start": "thrown"}
RECIPE_BALL_ARGS = ["--env-kwargs", json.dumps(RECIPE_BALL)]
# The rooms of the shipped model's data, which predates the ball task (the room's version history): a target drawn
# per layout, a uniform start heading, the success of 2026-11-30 (within 0.5 m, no view test; it ends episodes, so it
# sets the data's length) and the colours before the red target. Without the last three the collection gives other
# frames (61,683 steps instead of 64,084).
SHIPPED_DATA_ROOM = {"target": None, "start_view_deg": None, "reach_radius": 0.5, "success_pixels": None,
                     "target_colour": None, **RECIPE_BALL}
# Set in the installed model's config, not trained: the frame memory's pixels replace the dream's wherever the warp
# sees them (the gate's net, trained to weigh them by squared error, blends where it is unsure, which blurs what the
# memory holds sharp: sharpness at t+16 0.62 / 0.58 -> 0.74 / 0.77 for -0.1 to -0.2 dB; docs/experiments.md, "Depth
# for the memory"); and the memory holds three of the real context frames, the last, the first and one halfway
# (`frame_memory_frames`; a turn back or a walk shows again what the last frame never saw: sharpness at explore /
# sticky t+16 0.73 / 0.84 -> 0.82 / 0.92, explore t+16 +0.66 dB, t+1 -0.12 dB; README, "Fidelity"); and the memory
# lasts 64 full-speed steps of walking instead of 24 (`frame_memory_range_steps`, since 2026-12-06: an agent's approach
# to the ball keeps the room's pixels; transfer score +0.18 -> +0.45; docs/experiments.md, "Why the dream underpays").
# The range is set at install only (not in FAST_CONFIG): the recipe's termination detector learns the dreams of the
# default range, as the one shipped until 2026-12-06 did; the one shipped since (with the floor net) was trained from
# the installed model, whose range is 64.
INSTALL_CONFIG = {"frame_memory_gate": "seen", "frame_memory_frames": 3, "frame_memory_range_steps": 64.0}
INSTALL_ONLY = ("frame_memory_range_steps",)
STREAMING_STAGES = (
    StreamingStage(steps=600, window=6, batch_size=32, lr=3e-4, warmup=100, own_history=0.5, one_step_fraction=0.7,
                   still_windows=0.0),
    StreamingStage(steps=700, window=10, batch_size=24, lr=3e-4, warmup=50, own_history=0.8, one_step_fraction=0.8,
                   still_windows=0.1),
    StreamingStage(steps=700, window=16, batch_size=16, lr=2e-4, warmup=50, own_history=0.8, one_step_fraction=0.8,
                   still_windows=0.15),
    StreamingStage(steps=800, window=16, batch_size=16, lr=2e-4, warmup=50, own_history=0.9, one_step_fraction=0.8,
                   still_windows=0.3),
    StreamingStage(steps=800, window=16, batch_size=16, lr=2e-4, warmup=50, own_history=0.9, one_step_fraction=0.8,
                   still_windows=0.3, config=(("refiner_channels", 32), ("refiner_reads_changes", True)), seed_offset=1),
    StreamingStage(steps=800, window=16, batch_size=16, lr=1.5e-4, warmup=50, own_history=0.9, one_step_fraction=0.8,
                   still_windows=0.3, seed_offset=2),
    StreamingStage(steps=600, window=64, batch_size=16, lr=1.5e-4, warmup=50, own_history=0.9, one_step_fraction=0.8,
                   still_windows=0.3, seed_offset=4, burn_in=48),
    StreamingStage(steps=400, window=64, batch_size=16, lr=1e-4, warmup=50, own_history=0.9, one_step_fraction=0.8,
                   still_windows=0.3, seed_offset=5, burn_in=48, stop_windows=0.3),
    # One network pass per env step: the pass that draws a frame (tau = 1) also writes the state (commit_from_denoise),
    # so every target frame trains at tau = 1; the commit pass it removes pays for the grown decoder below.
    StreamingStage(steps=400, window=64, batch_size=16, lr=2e-4, warmup=50, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.3, seed_offset=6, burn_in=48, stop_windows=0.3,
                   config=(("commit_from_denoise", True),)),
    StreamingStage(steps=400, window=64, batch_size=16, lr=1.5e-4, warmup=50, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.3, seed_offset=7, burn_in=48, stop_windows=0.3),
    # The gradient through the model's own committed frames (`--own-history-grad`): the trained frames are an unrolled
    # open-loop dream, each step trained for what it does to the steps after it (docs/experiments.md,
    # "backpropagating through the dream": it beat the same stage without it).
    # They ran with the command line's defaults then: warmup 100 and `--dtype auto`, which then meant bf16 autocast on a
    # CPU with native bf16 (the shipped run's) and fp32 elsewhere: BF16_WHERE_NATIVE.
    StreamingStage(steps=400, window=64, batch_size=16, lr=1e-4, warmup=100, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.3, seed_offset=8, burn_in=48, stop_windows=0.3, own_history_grad=True,
                   dtype=BF16_WHERE_NATIVE),
    StreamingStage(steps=400, window=64, batch_size=16, lr=1e-4, warmup=100, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.3, seed_offset=9, burn_in=48, stop_windows=0.3, own_history_grad=True,
                   dtype=BF16_WHERE_NATIVE),
)

# The grown decoder (parallel schedule): after the decoder fine-tune, residual blocks at 32x32 and 64x64 pixels
# (`--decoder-blocks`; they start as the identity), then fine-tunes on the frozen encoder: (steps, lr, seed offset,
# object weight). The last weighs the task objects' pixels 1 + 8 times (`--object-weight`, on frames the run collects
# with the env's object masks): at 64x64 an object is a few dozen pixels, mostly edges. The dynamics never sees the
# decoder, so it is merged in after the streaming stages.
DECODER_GROWTH = ((1500, 5e-4, 0, 0.0), (1500, 3e-4, 1, 0.0), (1500, 3e-4, 2, 8.0))

# Streaming from the start (`--schedule from-start`): no parallel stage, no self-forcing stage; a fresh dynamics (the
# shipped model's fields: the changes-only refiner, 1 Euler step, a context window of 128) trained frame by frame as
# `step` samples it from its first update, first on windows of 6 at lr 1e-3 with a little of its own history, then on
# windows of 16 with mostly its own history, still and stopping windows, then on windows of 64 whose first 48 frames
# only build the state (the context a long dream has). Measured against the eight stages above:
# docs/experiments.md, "what was tried".
FROM_START_CONFIG = (("refiner_channels", 32), ("refiner_reads_changes", True), ("prev_frame_warp", False),
                     ("denoise_steps", 1), ("context_window", 128))
FROM_START_STAGES = (
    StreamingStage(steps=1200, window=6, batch_size=32, lr=1e-3, warmup=100, own_history=0.3, one_step_fraction=0.7,
                   still_windows=0.1),
    StreamingStage(steps=500, window=16, batch_size=16, lr=3e-4, warmup=50, own_history=0.8, one_step_fraction=0.8,
                   still_windows=0.3, seed_offset=1, stop_windows=0.2),
    StreamingStage(steps=400, window=64, batch_size=16, lr=1.5e-4, warmup=50, own_history=0.9, one_step_fraction=0.8,
                   still_windows=0.3, seed_offset=2, burn_in=48, stop_windows=0.3),
)

# The recipe of the shipped model (`--schedule fast`). The frame memory draws what the last real frame shows (89 % of
# the objects' pixels at t+4 come from it, `benchmarks/object_error.py`), so the dynamics need far less training than
# the parallel chain gave them: a fresh dynamics with every shipped field from its first update (one network pass per
# env step, `commit_from_denoise`; the memory with its "seen" gate, which runs no learned gate, and a depth net of
# width 32) trained by three streaming stages, the last on windows of 64 after a burn-in of 48 (what a long dream's
# context is; from-start without it lost at t+16), then the decoder grown straight from the autoencoder's (no plain
# fine-tune first) with the objects weighted up last (`FAST_DECODER`). Beside them, on the second core, each part that
# reads only the encoder: the target tracker (`fast_reward_steps`), the depth net on the room's true depth
# (`FAST_DEPTH`) and the prompt start (`fast_prompt_steps`). End to end (README, "the shipped default model"): 109.6
# min; with the camera servo set last, 15 of 16 fidelity gates.
FAST_CONFIG = FROM_START_CONFIG + (("commit_from_denoise", True), ("frame_memory_width", 12),
                                   ("frame_memory_depth_width", 32), ("frame_memory_gate", "seen"),
                                   ("frame_memory_frames", 3))
FAST_STAGES = (
    StreamingStage(steps=600, window=6, batch_size=32, lr=1e-3, warmup=100, own_history=0.3, one_step_fraction=1.0,
                   still_windows=0.1),
    StreamingStage(steps=300, window=16, batch_size=16, lr=3e-4, warmup=50, own_history=0.8, one_step_fraction=1.0,
                   still_windows=0.3, seed_offset=1, stop_windows=0.2),
    StreamingStage(steps=400, window=64, batch_size=16, lr=1.5e-4, warmup=50, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.3, seed_offset=2, burn_in=48, stop_windows=0.3),
)
# (steps, lr, seed offset, object weight), as DECODER_GROWTH; the first grows the autoencoder's decoder (decoder_blocks)
FAST_DECODER = ((2000, 1e-3, 0, 0.0), (1000, 3e-4, 1, 8.0))
# The dream from one frame: an agent's dream starts from a single real frame and runs on its own frames. No stage
# above trains that (their windows hold 6-64 real frames first), and from one frame a held key turned the dream to
# noise by t+24 (benchmarks/held_keys.py). These train windows of 48 from one real frame with 90 % of the history
# the model's own and the gradient through it; after everything else, before the detector learns its dreams. The
# first on the termination detector's data (the ball task under the explore, scripted and sticky-random policies),
# the second on data that walks into walls as agents do (OUT/one_frame_data: `--one-frame-policy`, half of it the
# keys policy holding a walk-and-turn key set ~48 steps, walls or not). The steps of runs/stream_start and
# runs/stream_keys (docs/experiments.md, "The dream from one frame"), not a tuned schedule.
ONE_FRAME_STAGES = (
    StreamingStage(steps=400, window=48, batch_size=16, lr=1e-4, warmup=50, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.1, seed_offset=11, own_history_grad=True, data="termination_data"),
    StreamingStage(steps=400, window=48, batch_size=16, lr=1e-4, warmup=50, own_history=0.9, one_step_fraction=1.0,
                   still_windows=0.1, seed_offset=13, own_history_grad=True, data="one_frame_data"),
)
FAST_DEPTH = DEPTH_LABEL_STAGES[-1]  # the shipped depth net's own stage: a fresh net, independent of the rest
SCHEDULES = ("parallel", "from-start", "fast")
DETECTOR_DATA = ("termination_data", "one_frame_data")  # `--termination-detector-data`: directories under OUT


@dataclass
class Recipe:
    out: str = "runs/default"
    episodes: int = 400  # real-room episodes to learn from
    max_steps: int = 200  # steps per episode
    workers: int = 2
    seed: int = 0
    policy: str = "explore"
    preset: str = "default"
    # "fast": FAST_STAGES from a fresh dynamics, the parts beside them (the shipped model's); "parallel": the parallel
    # dynamics stage, self-forcing, then STREAMING_STAGES; "from-start": FROM_START_STAGES only
    schedule: str = "fast"
    ae_steps: int = 1800
    ae_threads: int = 2  # the autoencoder stage has the machine to itself (its side jobs start after it): 14 vs 27 min
    ae_lr: float = 2e-3
    steps: int = 2000  # dynamics steps
    lr: float = 1e-3
    batch_size: int = 32
    window: int = 6  # short windows: many cheap updates (the previous frame reaches every token directly)
    still_windows: float = 0.0  # fraction of windows held still under the zero action (tried: 0.15, see README)
    self_forcing_steps: int = 300  # fine-tuning on the model's own rollouts (0 = skip)
    self_forcing_lr: float = 3e-4
    decoder_steps: int = 2500  # decoder fine-tuning on the frozen encoder's latents (0 = skip)
    decoder_lr: float = 1e-3
    decoder_blocks: str = "1,0,1,1"  # the grown decoder's residual blocks per level ("" = keep the preset's, no growth)
    denoise_steps: int = 1  # the shipped sampler setting
    context_window: int = 128  # the dream's context restarts from its last frame after this many (long rollouts drift)
    streaming_stages: int = len(STREAMING_STAGES)  # how many of STREAMING_STAGES to run after the merge (0 = none)
    # The reward model: trained alone on its own data of the room's default task (the ball, a success the camera sees),
    # after the dynamics, with windows drawn around the successes. The shipped model's is the target tracker (it only
    # predicts on dreamed frames, so no windows are dreamed for it); the recurrent one reads the dream's blurred frames
    # and fires on them, so dream PPO farmed its false successes (README, "reward prediction").
    reward_episodes: int = 1280  # 0 = no reward model (the dynamics' heads predict reward and termination)
    reward_seed: int = 2_000_000  # its episodes' seeds: apart from the world's data and the benchmarks' held-out seeds
    # the shipped tracker's: 1,500 + 2,000 + 2,500 + 4,000 continued steps on the any-colour ball's data (seeds from
    # 2,000,000), then 2,000 on the red ball's with the walls (seeds from 3,000,000), which added the room head
    reward_steps: int = 12_000
    fast_reward_steps: int = 3000  # `--schedule fast`: the tracker's steps (on the second core; 1,200 and 2,000 lost)
    reward_lr: float = 1e-3
    reward_own_share: float = 0.25  # windows whose second half the model dreams (--self-forcing of `train reward`)
    reward_kind: str = "target"  # or "recurrent": a recurrent net over the latent frames
    reward_terminal_windows: float = 0.3  # windows that end at a success (--terminal-windows): 1 in ~200 otherwise
    # A target tracker's range calibration (`train reward --calibration-data`): episodes it never trains on, of a
    # policy mixture whose views its own data lacks (the target near and ahead), on other seeds. 0 = none.
    calibration_episodes: int = 192
    calibration_seed: int = 2_500_000
    calibration_policy: str = "explore,scripted,sticky"
    # The prompt-start generator (`neuralsim train prompt`): first frames of the room's default task and their
    # descriptions, one-step episodes of many layouts; what `reset(options={"prompt": ...})` draws the start from.
    prompt_layouts: int = 20000  # 0 = none (a prompt then only conditions the dynamics)
    prompt_seed: int = 5_000_000  # its layouts' seeds: apart from the world's data and prompt_fidelity's held-out seeds
    prompt_steps: int = 3000
    fast_prompt_steps: int = 1500  # `--schedule fast`: its steps (3,000 measured no better, README "the shipped default")
    prompt_lr: float = 1e-3
    # The view generator (`neuralsim train views`): the views around a start that a prompt names, which the frame memory
    # holds below the real frames (what lies behind the camera). Its data: the room turned on the spot half a turn
    # (`--policy turn`, 45 steps), one episode per layout, pairs of frames of one place at two headings.
    view_layouts: int = 15000  # 0 = none
    view_seed: int = 6_000_000  # apart from the world's data, the prompt start's and the benchmarks' held-out seeds
    view_steps: int = 5000
    view_pairs: int = 6  # pairs per episode (each frame is encoded once: 6 pairs encode <= 12 of its 46 frames)
    view_lr: float = 1e-3
    # The frame memory's floor net (`examples/finetune_floor.py`), on the finished model: which pixels of a remembered
    # frame show the floor, from the room's segmentation, so a ball's depth comes from where the floor ends under it
    # (`frame_memory_floor_net_width`, `neuralsim.frame_memory.standing_depth`; since 2026-12-06, last session: with the
    # detector retrained on its dreams, reward Pearson / F1 with the ball at rest in 64 new rooms 0.661 / 0.592 ->
    # 0.786 / 0.750; docs/experiments.md, "The floor's pixels under what stands on it"). Before the detector, which
    # learns the dreams it draws.
    floor_steps: int = 3000  # 0 = none (the depth net's depth as it is)
    floor_frames: int = 32768
    floor_width: int = 16
    floor_stand_min_depth: float = 1.2  # nearer standing pixels keep the depth net's (the explore policy's pushed boxes)
    # The termination detector (`neuralsim train termination`), after everything else: it learns what the finished
    # model's own dreams show on the step a real episode ends (the room's success), on the room's default task under
    # the explore, scripted and sticky-random policies, so the dream's endings (and its bonus) come from the frame it
    # draws, not from the tracker's geometry (README, "reward prediction").
    termination_episodes: int = 1500  # 0 = none (the tracker's own ending)
    termination_seed: int = 7_000_000  # apart from the other data and the benchmarks' held-out seeds
    termination_windows: int = 4096  # windows dreamed (1, 4 or 16 real frames, then up to 24 steps), half at an end;
    #                                  a quarter of them from an episode's first frame, up to 64 steps (`train
    #                                  termination`'s --termination-reset-share / --termination-reset-horizon defaults)
    termination_steps: int = 5000
    # the detector's real frames (`train termination --termination-real-data`): episodes of the room's default task,
    # up to 64 steps each, under policies that reach the ball (scripted, seek) and that look around it (sticky-random
    # with pitch, explore), a quarter of each batch: the detector judged the dreamed windows' own real frames of new
    # rooms with F1 0.86 (sticky-random: 0.39, firing on a ball at the frame's corner 1.4 m away under a pitched view);
    # a dream's ending is judged no better than that (docs/experiments.md, "The detector's real frames")
    termination_real_episodes: int = 4000  # 0 = none (the dreamed windows' real frames alone)
    termination_real_seed: int = 9_000_000  # apart from the other data; prompt_fidelity.py's held-out rooms, where
    #                                         only the prompt's first frames are scored (the detector plays no part)
    termination_real_policy: str = "sticky,scripted,seek,explore"
    termination_real_max_steps: int = 64
    # how many of ONE_FRAME_STAGES run before the detector: both, the shipped model's (2026-12-06: the first alone
    # gained on held keys but lost on the transfer benchmark; with the second and the detector on its data, transfer
    # score +0.04 -> +0.18, Spearman 0.75 -> 0.90: docs/experiments.md, "The dream from one frame")
    one_frame_stages: int = len(ONE_FRAME_STAGES)
    # the data the detector dreams, a directory under OUT: "termination_data" (the episodes above) or
    # "one_frame_data" (the walk-into-walls episodes of the second one-frame stage, collected here if no stage did)
    termination_detector_data: str = "one_frame_data"  # the shipped detector's (its agreement: Spearman 0.83 -> 0.97)
    one_frame_episodes: int = 1500  # the second one-frame stage's data (OUT/one_frame_data)
    one_frame_seed: int = 8_000_000  # apart from the other data and the benchmarks' held-out seeds
    one_frame_policy: str = "explore,scripted,keys,keys"
    # The frame memory (`neuralsim train memory`), last: a gate that puts the last real context frame's pixels, warped
    # to the dream's camera, into the decoded frames; trained on the finished model's own dreams of the world's data.
    memory_steps: int = 3000  # 0 = none
    memory_rollouts: int = 480  # windows dreamed (16 real frames, then 48 steps of the data's actions)
    memory_lr: float = 2e-3
    # Then a depth net (trained without labels) joins the gate, so the warp follows a walk too; the gate continues.
    memory_depth_steps: int = 1000  # 0 = the memory warps by rotation only (1,000 steps beat 3,000 on the benchmark)
    memory_depth_width: int = 16
    # Then that depth net alone on the room's true depth (`examples/finetune_depth.py`: frames of the data's env under
    # the explore and sticky-random policies, the views a gate trained on the data's actions alone misjudges), and the
    # gate retrained on it held fixed (`--memory-depth-frozen`).
    memory_depth_label_stages: int = len(DEPTH_LABEL_STAGES)  # how many of them; 0 = the photometric depth stays
    memory_depth_label_frames: int = 32768  # a stage's frames where it names none
    memory_regate_steps: int = 1000
    dtype: str = "float32"  # as the shipped run (bf16 gave no speed-up on these small convs and matmuls)
    resume: bool = False
    install: bool = False
    install_only: bool = False  # skip collection and training: install the model already in OUT/model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in vars(Recipe()).items():
        if isinstance(value, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", action="store_true")
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    recipe = Recipe(**vars(parser.parse_args()))
    if recipe.schedule not in SCHEDULES:
        parser.error(f"--schedule must be one of {', '.join(SCHEDULES)}, got {recipe.schedule!r}")
    if recipe.termination_detector_data not in DETECTOR_DATA:
        parser.error(f"--termination-detector-data must be one of {', '.join(DETECTOR_DATA)}, "
                     f"got {recipe.termination_detector_data!r}")
    out = Path(recipe.out)
    data, model_dir = out / "data", out / "model"
    if recipe.install_only:
        # the last stage's directory first: each later stage starts from the one before it
        if recipe.schedule == "fast":  # dynamics, then the grown decoder, depth net, tracker, prompt start merged in
            done = [out / "final_termination", out / "final_fast", out / "final_reward", out / "final_depth",
                    out / "final", out / f"fast{len(FAST_STAGES)}"]
        elif recipe.schedule == "from-start":  # start stages, decoder, prompt start merged in, reward, frame memory
            done = [out / "final_termination"] + memory_dirs(out) + [
                out / "reward", out / "final_prompt", out / "final", out / f"start{len(FROM_START_STAGES)}"]
        else:  # parallel, self-forcing, merge, streaming stages, grown decoder, reward, prompt start, frame memory
            done = [out / "final_termination"] + memory_dirs(out) + [
                out / "prompt", out / "reward", out / "final_grown"] + [
                out / f"streaming{i}" for i in range(recipe.streaming_stages, 0, -1)] + [out / "final", model_dir]
        found = next(d for d in done if (d / "config.json").exists())
        if recipe.schedule == "fast" and (data / "manifest.json").exists():
            set_camera_servo(found, data)  # the recipe's last step, for a run made before it had one
        install(found)
        return
    t0 = time.perf_counter()

    from neuralsim.data import collect

    if not (data / "manifest.json").exists() or recipe.resume:
        # Only the task differs from the room's default, and `neuralsim eval transfer` drops task options
        # (NeuralSimRoomEnv.TASK_OPTIONS) from a model's recorded kwargs, so agents face the env's own (transfer) task.
        summary = collect("NeuralSimRoom-v0", data, episodes=recipe.episodes, policy=recipe.policy, workers=recipe.workers,
                          seed=recipe.seed, max_steps=recipe.max_steps, resume=(data / "manifest.json").exists(),
                          env_kwargs=dict(SHIPPED_DATA_ROOM))
        print("collected:", summary, flush=True)
    t_collect = time.perf_counter() - t0

    from neuralsim.checkpoints import publish_dir
    from neuralsim.train import TrainConfig, train

    timings: dict[str, float] = {"collect": t_collect}
    common = dict(data=str(data), preset=recipe.preset, batch_size=recipe.batch_size, window=recipe.window,
                  seed=recipe.seed, dtype=recipe.dtype, latent_cache_dir=str(out / "latent_cache"))
    ae_dir = out / "autoencoder"  # the finished autoencoder stage's export: also the marker that it is done
    if not (ae_dir / "model.safetensors").exists():
        import torch

        t, threads = time.perf_counter(), torch.get_num_threads()
        torch.set_num_threads(recipe.ae_threads)
        try:
            train(TrainConfig(stage="autoencoder", out=str(model_dir), steps=recipe.ae_steps, lr=recipe.ae_lr,
                              resume=(model_dir / "checkpoints" / "latest.json").exists(), **common))
        finally:
            torch.set_num_threads(threads)  # one thread per job from here on: two jobs share the machine
        timings["autoencoder"] = time.perf_counter() - t
        tmp = out / ".autoencoder-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns("checkpoints", "logs", "samples"))
        publish_dir(tmp, ae_dir)
    if recipe.schedule == "fast":
        final_dir = run_fast(recipe, out, data, ae_dir, common, timings)
        if recipe.floor_steps > 0:
            final_dir = floor_stage(recipe, out, data, final_dir, timings)
        if recipe.termination_episodes > 0:
            final_dir = termination_stage(recipe, out, final_dir, timings)
        finish(recipe, final_dir, timings, t0)
        return
    # The dynamics only reads the encoder's latents, so the decoder trains on alone (encoder frozen) on the second
    # core while the dynamics train: sharper frames for every step of the dream without touching the dynamics.
    decoder_job, decoder_dir, t_decoder = None, out / "decoder", time.perf_counter()
    if recipe.decoder_steps > 0 and not (decoder_dir / "model.safetensors").exists():
        decoder_job = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("finetune_decoder.py")), "--model", str(ae_dir),
             "--data", str(data), "--steps", str(recipe.decoder_steps), "--lr", str(recipe.decoder_lr),
             "--seed", str(recipe.seed), "--out", str(decoder_dir)],
            stdout=(out / "decoder.log").open("w"), stderr=subprocess.STDOUT)
    grow_job = None
    if recipe.schedule == "parallel" and recipe.decoder_steps > 0 and recipe.decoder_blocks:
        grow_job = threading.Thread(target=grow_side_job, args=(recipe, out, data, decoder_job, decoder_dir, timings))
        grow_job.start()
    if recipe.schedule == "from-start":
        # A fresh dynamics on the autoencoder (the decoder fine-tune beside it does not change the latents), trained
        # frame by frame from its first update; the fine-tuned decoder is merged in at the end.
        init = out / "fresh"
        if not (init / "model.safetensors").exists():
            fresh_dynamics(ae_dir, init, recipe.seed, dict(FROM_START_CONFIG), data=data, window=recipe.window,
                           batch_size=recipe.batch_size)
        # The prompt start reads only the encoder's latents: it trains on the second core after the decoder.
        prompt_job = None
        if recipe.prompt_layouts > 0 and not (out / "prompt" / "model.safetensors").exists():
            prompt_job = threading.Thread(target=prompt_side_job, args=(recipe, out, init, decoder_job, t_decoder,
                                                                        timings))
            prompt_job.start()
        dynamics_dir = run_streaming(FROM_START_STAGES, init, out, "start", recipe, common, timings)
        final_dir = merge_decoder(recipe, decoder_job, t_decoder, decoder_dir, dynamics_dir, out, timings)
        if prompt_job is not None:
            prompt_job.join()
        if recipe.prompt_layouts > 0:
            if not (out / "prompt" / "model.safetensors").exists():
                raise SystemExit(f"the prompt-start stage failed: see {out / 'prompt.log'}")
            merge_prompt_start(out / "prompt", final_dir, out / "final_prompt")
            final_dir = out / "final_prompt"
    else:
        t = time.perf_counter()
        train(TrainConfig(stage="dynamics", out=str(model_dir), steps=recipe.steps, lr=recipe.lr,
                          still_windows=recipe.still_windows,
                          resume=recipe.resume or (model_dir / "checkpoints" / "latest.json").exists(), **common))
        timings["dynamics"] = time.perf_counter() - t
        # Self-forcing: the model continues its own rollouts (1-4 frames, no gradient) toward the real frames, so it
        # learns to pull back the drift a teacher-forced model never sees.
        dynamics_dir = model_dir
        if recipe.self_forcing_steps > 0:
            dynamics_dir = out / "sf"
            t = time.perf_counter()
            train(TrainConfig(stage="dynamics", out=str(dynamics_dir), init=str(model_dir),
                              steps=recipe.self_forcing_steps, lr=recipe.self_forcing_lr, self_forcing=0.5,
                              self_forcing_frames=4, still_windows=recipe.still_windows,
                              resume=recipe.resume and (dynamics_dir / "checkpoints" / "latest.json").exists(), **common))
            timings["self_forcing"] = time.perf_counter() - t
        final_dir = merge_decoder(recipe, decoder_job, t_decoder, decoder_dir, dynamics_dir, out, timings)
        # One Euler step (+ the commit pass): measured, 2-3 fused steps sharpen the first frames but their low-noise
        # passes feed back into the history and blow up by t+16 (benchmarks/fidelity.py --denoise-steps). A context of
        # at most 128 frames: trained on windows of 16, the recurrent state drifts out of the data's range over
        # hundreds of frames (benchmarks/fidelity.py --context-window; docs/experiments.md, "what was tried").
        from neuralsim.model import WorldModel

        final = WorldModel.from_pretrained(final_dir)
        final.config = final.config.replace(denoise_steps=recipe.denoise_steps, context_window=recipe.context_window)
        final.save_pretrained(final_dir)
        # Streaming training: the parallel stages above train most frames against noisy history, which sampling never
        # shows; these train each frame exactly as `step` samples it, on clean (or the model's own) history. They start
        # from the fp16 copy of the merged model, as the shipped run did (it started from the model shipped before it).
        if recipe.streaming_stages > 0:
            init = out / "merged_fp16"
            fp16_copy(final_dir, init)
            final_dir = run_streaming(STREAMING_STAGES[: recipe.streaming_stages], init, out, "streaming", recipe,
                                      common, timings)
        if grow_job is not None:
            grow_job.join()
            grown = out / f"decoder_grown{len(DECODER_GROWTH)}"
            if not (grown / "model.safetensors").exists():
                raise SystemExit(f"the decoder growth failed: see {out / 'decoder_grown.log'}")
            final_dir = merge_decoder_into(grown, final_dir, out / "final_grown")
    # The reward model reads the committed latents, so it trains after the dynamics, on data whose rewards are the task's.
    if recipe.reward_episodes > 0:
        final_dir = reward_stage(recipe, out, final_dir, recipe.reward_steps, timings)
    if recipe.prompt_layouts > 0 and recipe.schedule == "parallel":
        prompt_data, prompt_dir = out / "prompt_data", out / "prompt"
        t = time.perf_counter()
        if not (prompt_data / "manifest.json").exists() or recipe.resume:
            collect("NeuralSimRoom-v0", prompt_data, episodes=recipe.prompt_layouts, policy="random",
                    workers=recipe.workers, seed=recipe.prompt_seed, max_steps=1, episodes_per_shard=256,
                    resume=(prompt_data / "manifest.json").exists(), env_kwargs=dict(RECIPE_BALL))
        train(TrainConfig(stage="prompt", out=str(prompt_dir), init=str(final_dir), data=str(prompt_data),
                          steps=recipe.prompt_steps, lr=recipe.prompt_lr, window=1, batch_size=64, warmup=100,
                          seed=recipe.seed, dtype=recipe.dtype, latent_cache_dir=str(out / "latent_cache"),
                          resume=recipe.resume and (prompt_dir / "checkpoints" / "latest.json").exists()))
        timings["prompt start"] = time.perf_counter() - t
        final_dir = prompt_dir
    if recipe.memory_steps > 0:  # last: it learns the finished model's own dreams
        t = time.perf_counter()
        train(memory_stage(recipe, final_dir, data, out / "memory"))
        final_dir = out / "memory"
        if recipe.memory_depth_steps > 0:
            train(memory_stage(recipe, final_dir, data, out / "memory_depth", depth=True))
            final_dir = out / "memory_depth"
            for i, stage in enumerate(DEPTH_LABEL_STAGES[:recipe.memory_depth_label_stages], 1):
                labelled = out / f"memory_depth_labels{i}"
                if not (labelled / "config.json").exists():  # written last (atomically): a finished run
                    subprocess.run(depth_label_command(recipe, stage, final_dir, data, labelled), check=True)
                final_dir = labelled
                if stage.regate:
                    train(memory_stage(recipe, labelled, data, out / f"memory_regate{i}", regate=True))
                    final_dir = out / f"memory_regate{i}"
        timings["frame memory"] = time.perf_counter() - t
    if recipe.floor_steps > 0 and recipe.memory_depth_steps > 0:
        final_dir = floor_stage(recipe, out, data, final_dir, timings)
    if recipe.termination_episodes > 0:  # last: it learns what the finished model's dreams show
        final_dir = termination_stage(recipe, out, final_dir, timings)
    finish(recipe, final_dir, timings, t0)


def finish(recipe: Recipe, final_dir: Path, timings: dict[str, float], t0: float) -> None:
    """Print each stage's minutes and the total; with ``--install``, install ``final_dir``."""
    t_total = time.perf_counter() - t0
    stages = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in timings.items())
    print(f"recipe done: {stages}; total {t_total / 60:.1f} min of wall clock", flush=True)
    if recipe.install:
        install(final_dir)


#: The room's camera height above its floor (envs/room.py, CAMERA_HEIGHT), which the floor's depth follows from.
ROOM_CAMERA_HEIGHT = 0.6
FLOOR_FIELDS = ("frame_memory_floor_height", "frame_memory_floor_net_width", "frame_memory_stand_min_depth")


def floor_command(recipe: Recipe, init: Path, data: Path, dest: Path) -> list[str]:
    """`examples/finetune_floor.py` from ``init`` on frames of ``data``'s env under the explore, sticky-random and
    scripted policies, into ``dest``."""
    return [sys.executable, str(Path(__file__).with_name("finetune_floor.py")), "--model", str(init), "--data", str(data),
            "--frames", str(recipe.floor_frames), "--policies", "explore", "sticky", "scripted", "--width",
            str(recipe.floor_width), "--floor-height", str(ROOM_CAMERA_HEIGHT), "--stand-min-depth",
            str(recipe.floor_stand_min_depth), "--steps", str(recipe.floor_steps), "--batch-size", "32", "--flip",
            "--seed", str(recipe.seed), "--out", str(dest)]


def floor_stage(recipe: Recipe, out: Path, data: Path, init: Path, timings: dict[str, float]) -> Path:
    """The floor net (:func:`floor_command`) into OUT/floor, merged into ``init`` as OUT/final_floor (returned)."""
    t = time.perf_counter()
    if not (out / "floor" / "config.json").exists():  # written last (atomically): a finished run
        subprocess.run(floor_command(recipe, init, data, out / "floor"), check=True)
    merge_part(out / "floor", init, out / "final_floor", "frame_memory.floor_net.", FLOOR_FIELDS)
    timings["floor net"] = time.perf_counter() - t
    return out / "final_floor"


def termination_stage(recipe: Recipe, out: Path, init: Path, timings: dict[str, float]) -> Path:
    """Collect the termination detector's data and train it (:func:`termination_commands`) from the finished model
    ``init`` into OUT/termination, each a process of its own, here in the foreground; merged into ``init`` as
    OUT/final_termination (returned)."""
    t = time.perf_counter()
    *collect_data, train_detector = termination_commands(recipe, out, init, progress=True)
    for command in collect_data:
        subprocess.run(command, check=True)
    if recipe.one_frame_stages > 0:
        init = one_frame_stage(recipe, out, init, timings)
        train_detector[train_detector.index("--init") + 1] = str(init)
    if recipe.termination_detector_data == "one_frame_data" and recipe.one_frame_stages < 2:  # (else that stage's)
        command = one_frame_data_command(recipe, out, progress=True)
        if command:
            subprocess.run(command, check=True)
    subprocess.run(train_detector, check=True)
    # the detector merged into ``init``, whose start set stays (the run's is its own data's first frames)
    merge_part(out / "termination", init, out / "final_termination", "termination_detector.", TERMINATION_FIELDS)
    timings["termination detector"] = time.perf_counter() - t
    return out / "final_termination"


def one_frame_stage(recipe: Recipe, out: Path, init: Path, timings: dict[str, float]) -> Path:
    """The first ``one_frame_stages`` of ONE_FRAME_STAGES from ``init``, each on its own data under OUT (the
    walk-into-walls data collected first where a stage needs it: :func:`one_frame_data_command`), into
    OUT/one_frame1, 2, ...; the last one's model with ``init``'s start set as OUT/final_one_frame (returned)."""
    from neuralsim.model import WorldModel

    stages = ONE_FRAME_STAGES[: recipe.one_frame_stages]
    command = one_frame_data_command(recipe, out, progress=True)
    if command and any(stage.data == "one_frame_data" for stage in stages):
        subprocess.run(command, check=True)
    dest = out / "final_one_frame"
    common = dict(data=str(out / "termination_data"), preset=recipe.preset, batch_size=recipe.batch_size,
                  window=recipe.window, seed=recipe.seed, dtype=recipe.dtype,
                  latent_cache_dir=str(out / "latent_cache"))
    last = run_streaming(stages, init, out, "one_frame", recipe, common, timings)
    # the stages' own start set is their data's first frames: the finished model's (the task's) stays
    publish_model(WorldModel.from_pretrained(last), init, dest)
    return dest


def one_frame_data_command(recipe: Recipe, out: Path, progress: bool) -> list[str] | None:
    """Collect ``one_frame_episodes`` of the room's default task under ``one_frame_policy`` into OUT/one_frame_data
    (continued where it holds some); None once collected, unless ``resume``."""
    data = out / "one_frame_data"
    if (data / "manifest.json").exists() and not recipe.resume:
        return None
    return ([sys.executable, "-m", "neuralsim", "collect", "--env", "NeuralSimRoom-v0", *RECIPE_BALL_ARGS,
             "--out", str(data), "--episodes", str(recipe.one_frame_episodes), "--policy", recipe.one_frame_policy, "--workers",
             str(recipe.workers), "--seed", str(recipe.one_frame_seed), "--max-steps", str(recipe.max_steps)]
            + ([] if progress else ["--no-progress"]) + (["--resume"] if (data / "manifest.json").exists() else []))


def termination_commands(recipe: Recipe, out: Path, init: Path, progress: bool) -> list[list[str]]:
    """The termination detector's processes: collect ``termination_episodes`` of the room's default task under the
    explore, scripted and sticky-random policies into OUT/termination_data, and ``termination_real_episodes`` under
    ``termination_real_policy`` into OUT/termination_real_data (each continued where it holds some; skipped once
    collected unless ``resume``), then `neuralsim train termination` from ``init`` on OUT/``termination_detector_data``
    (and the real frames) into OUT/termination."""
    cli = [sys.executable, "-m", "neuralsim"]
    quiet = [] if progress else ["--no-progress"]
    data, real_data, train_dir = out / "termination_data", out / "termination_real_data", out / "termination"
    commands = []
    for dest, episodes, policy, seed, max_steps in (
            (data, recipe.termination_episodes, "explore,scripted,sticky", recipe.termination_seed, recipe.max_steps),
            (real_data, recipe.termination_real_episodes, recipe.termination_real_policy, recipe.termination_real_seed,
             recipe.termination_real_max_steps)):
        if episodes and (not (dest / "manifest.json").exists() or recipe.resume):
            commands.append(cli + ["collect", "--env", "NeuralSimRoom-v0", *RECIPE_BALL_ARGS, "--out", str(dest),
                                   "--episodes", str(episodes), "--policy", policy, "--workers", str(recipe.workers), "--seed",
                                   str(seed), "--max-steps", str(max_steps)]
                            + quiet + (["--resume"] if (dest / "manifest.json").exists() else []))
    commands.append(cli + ["train", "termination", "--init", str(init), "--data",
                           str(out / recipe.termination_detector_data), "--out", str(train_dir),
                           "--window", "24", "--termination-windows", str(recipe.termination_windows), "--steps",
                           str(recipe.termination_steps), "--batch-size", "128", "--lr", "1e-3", "--seed",
                           str(recipe.seed), "--dtype", recipe.dtype] + quiet
                    + (["--termination-real-data", str(real_data)] if recipe.termination_real_episodes else [])
                    + (["--resume"] if recipe.resume and (train_dir / "checkpoints" / "latest.json").exists() else []))
    return commands


def reward_stage(recipe: Recipe, out: Path, init: Path, steps: int, timings: dict[str, float]) -> Path:
    """Collect the reward data and train the reward model (:func:`reward_commands`) for ``steps`` from ``init``
    into OUT/reward (returned), each a process of its own, here in the foreground."""
    t = time.perf_counter()
    for command in reward_commands(recipe, out, init, steps, workers=recipe.workers, progress=True):
        subprocess.run(command, check=True)
    timings["reward model"] = time.perf_counter() - t
    return out / "reward"


def reward_commands(recipe: Recipe, out: Path, init: Path, steps: int, workers: int, progress: bool) -> list[list[str]]:
    """The reward model's processes: collect its data into OUT/reward_data (``reward_episodes`` of the room's default
    task; skipped once collected unless resuming) and, for a target tracker, its calibration episodes into
    OUT/calibration_data, then `neuralsim train reward` (``reward_kind``) for ``steps`` from ``init`` into OUT/reward,
    the latents cached in OUT/latent_cache, the tracker's range calibrated on those episodes."""
    reward_data, reward_dir = out / "reward_data", out / "reward"
    cli, quiet = [sys.executable, "-m", "neuralsim"], [] if progress else ["--no-progress"]
    commands = []
    if not (reward_data / "manifest.json").exists() or recipe.resume:
        commands.append(cli + ["collect", "--env", "NeuralSimRoom-v0", *RECIPE_BALL_ARGS, "--out", str(reward_data),
                               "--episodes", str(recipe.reward_episodes), "--policy", recipe.policy, "--workers", str(workers),
                               "--seed", str(recipe.reward_seed), "--max-steps", str(recipe.max_steps)] + quiet
                        + (["--resume"] if (reward_data / "manifest.json").exists() else []))
    calibration = out / "calibration_data"
    calibrate = recipe.reward_kind == "target" and recipe.calibration_episodes > 0
    if calibrate and (not (calibration / "manifest.json").exists() or recipe.resume):
        commands.append(cli + ["collect", "--env", "NeuralSimRoom-v0", *RECIPE_BALL_ARGS, "--out", str(calibration),
                               "--episodes", str(recipe.calibration_episodes), "--policy", recipe.calibration_policy, "--workers",
                               str(workers), "--seed", str(recipe.calibration_seed), "--max-steps",
                               str(recipe.max_steps)] + quiet
                        + (["--resume"] if (calibration / "manifest.json").exists() else []))
    own_share = recipe.reward_own_share if recipe.reward_kind == "recurrent" else 0.0
    commands.append(cli + ["train", "reward", "--init", str(init), "--data", str(reward_data), "--out", str(reward_dir),
                           "--reward-kind", recipe.reward_kind, "--steps", str(steps), "--lr", str(recipe.reward_lr),
                           "--window", "32", "--batch-size", "32", "--warmup", "100", "--self-forcing", str(own_share),
                           "--terminal-windows", str(recipe.reward_terminal_windows), "--seed", str(recipe.seed),
                           "--dtype", recipe.dtype, "--latent-cache", str(out / "latent_cache")] + quiet
                    + (["--calibration-data", str(calibration)] if calibrate else [])
                    + (["--resume"] if recipe.resume and (reward_dir / "checkpoints" / "latest.json").exists() else []))
    return commands


def run_fast(recipe: Recipe, out: Path, data: Path, ae_dir: Path, common: dict[str, Any],
             timings: dict[str, float]) -> Path:
    """`--schedule fast` after the autoencoder: on this core ``FAST_STAGES`` on a fresh dynamics (``FAST_CONFIG``),
    then the autoencoder's decoder grown (``FAST_DECODER``); on the other the target tracker, the depth net and the
    prompt start (:func:`fast_side_job`), each reading only the encoder; then all merged into OUT/final_fast
    (returned). A recurrent reward model (``reward_kind``) learns on the dynamics' own frames, so it follows them here."""
    init = out / "fresh"
    if not (init / "model.safetensors").exists():
        fresh_dynamics(ae_dir, init, recipe.seed, dict(FAST_CONFIG), data=data, window=recipe.window,
                       batch_size=recipe.batch_size)
    side = threading.Thread(target=fast_side_job, args=(recipe, out, data, ae_dir, init, timings))
    side.start()
    final_dir = run_streaming(FAST_STAGES, init, out, "fast", recipe, common, timings)
    if recipe.reward_episodes > 0 and not tracker_beside(recipe):
        final_dir = reward_stage(recipe, out, final_dir, recipe.fast_reward_steps, timings)
    t = time.perf_counter()
    grown_ok = grow_decoder_runs(recipe, out, data, ae_dir, FAST_DECODER)
    timings["decoder growth (after the dynamics)"] = time.perf_counter() - t
    side.join()
    if not grown_ok:
        raise SystemExit(f"the decoder growth failed: see {out / 'decoder_grown.log'}")
    final_dir = merge_decoder_into(out / f"decoder_grown{len(FAST_DECODER)}", final_dir, out / "final")
    if not (out / "depth" / "config.json").exists():  # written last (atomically): a finished run
        raise SystemExit(f"the depth net's training failed: see {out / 'depth.log'}")
    merge_part(out / "depth", final_dir, out / "final_depth", "frame_memory.depth.",
               ("frame_memory_depth_width", "frame_memory_depth_refine"))
    final_dir = out / "final_depth"
    if recipe.reward_episodes > 0 and tracker_beside(recipe):
        if not (out / "reward" / "model.safetensors").exists():
            raise SystemExit(f"the tracker's training failed: see {out / 'reward.log'}")
        # the start set too: the first frames of the tracker's episodes, the task it scores (the ball room), as the
        # foreground reward stage gives; the dynamics' data holds the rooms before the task
        merge_part(out / "reward", final_dir, out / "final_reward", "reward_model.", REWARD_MODEL_FIELDS,
                   start_set=out / "reward")
        final_dir = out / "final_reward"
    if recipe.prompt_layouts > 0:
        if not (out / "prompt" / "model.safetensors").exists():
            raise SystemExit(f"the prompt-start stage failed: see {out / 'prompt.log'}")
        merge_prompt_start(out / "prompt", final_dir, out / "final_prompt")
        final_dir = out / "final_prompt"
    if recipe.view_layouts > 0:
        if not (out / "views" / "model.safetensors").exists():
            raise SystemExit(f"the view generator's training failed: see {out / 'views.log'}")
        merge_part(out / "views", final_dir, out / "final_fast", "prompt_views.", VIEW_FIELDS)
        final_dir = out / "final_fast"
    set_camera_servo(final_dir, data)
    return final_dir


def set_camera_servo(model_dir: Path, data: Path) -> dict[str, Any]:
    """Set the velocity servo of ``data``'s camera (its manifest's ``"camera"``, from the env's ``camera_spec``) in
    ``model_dir``'s config, in place (staged, then moved): the dream's camera then ramps up from rest and coasts after
    a release as the room's agent does, where the commanded motion ran up to 0.05 m ahead of the room's after 4 steps
    of the collection policy. The frame memory warps the last real frame by that pose, so its pixels land where the
    room's are (on the shipped model: objects at explore t+4 21.88 -> 22.12 dB, idle t+16 1.29 -> 0.97 dB; README,
    "the camera's servo in the dream"). A config change, no weight: the networks trained without it, and the action
    input it changes with them (the motion made instead of the one commanded) moved no figure by more than 0.03 dB.
    Returns the fields set ({} when the data states no servo)."""
    from neuralsim.camera import servo_config_fields
    from neuralsim.data import Dataset
    from neuralsim.model import WorldModel

    fields = servo_config_fields(Dataset(data).manifest.get("camera"))
    if fields:
        model = WorldModel.from_pretrained(model_dir)
        model.config = model.config.replace(**fields)
        publish_model(model, model_dir, model_dir)
    return fields


# What a reward model adds to a model's config (`neuralsim train reward`), merged with its weights.
REWARD_MODEL_FIELDS = ("reward_model_channels", "reward_model_kind", "reward_task", "reward_range_calibration")
VIEW_FIELDS = ("prompt_view_channels", "prompt_view_yaws_deg")  # the view generator's, merged with its weights
TERMINATION_FIELDS = ("termination_detector_channels",)  # the termination detector's, merged with its weights


def tracker_beside(recipe: Recipe) -> bool:
    """Whether `--schedule fast` trains the reward model on the second core from the fresh model: a target tracker
    trains only its own weights on real latents (bit for bit the same from the fresh model as from the trained
    dynamics), while a recurrent model's windows continue the dynamics' own dreams."""
    return recipe.reward_kind == "target"


def fast_side_job(recipe: Recipe, out: Path, data: Path, ae_dir: Path, init: Path, timings: dict[str, float]) -> None:
    """The second core of `--schedule fast`, each a process of its own: the target tracker from ``init`` (its
    episodes collected, then `neuralsim train reward`, OUT/reward, OUT/reward.log), the depth net on the room's true
    depth (``FAST_DEPTH``) into OUT/depth (OUT/depth.log), the prompt start into OUT/prompt (OUT/prompt.log). A failed
    part leaves its log; the merge after it stops the recipe there."""
    if recipe.reward_episodes > 0 and tracker_beside(recipe) and not (out / "reward" / "model.safetensors").exists():
        t = time.perf_counter()
        if not tracker_side_job(recipe, out, init):
            return
        timings["tracker (beside the dynamics)"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (out / "depth" / "config.json").exists():
        with (out / "depth.log").open("a") as log:
            command = depth_label_command(recipe, FAST_DEPTH, init, data, out / "depth", threads=1)
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                log.write(f"\nthe depth net's training exited with {done.returncode}\n")
                return
    timings["depth net (beside the dynamics)"] = time.perf_counter() - t
    if recipe.prompt_layouts > 0 and not (out / "prompt" / "model.safetensors").exists():
        prompt_side_job(recipe, out, init, None, time.perf_counter(), timings, steps=recipe.fast_prompt_steps)
    if recipe.view_layouts > 0 and not (out / "views" / "model.safetensors").exists():
        # from the prompt start's model: the view generator starts from its generator (it reads only the encoder)
        views_side_job(recipe, out, out / "prompt" if recipe.prompt_layouts > 0 else init, timings)


def views_side_job(recipe: Recipe, out: Path, init: Path, timings: dict[str, float]) -> None:
    """The view generator from ``init`` (it reads only the encoder; it starts from ``init``'s prompt start where it has
    one): the room turned on the spot collected (``view_layouts`` episodes of 45 steps, `--policy turn`), then
    `neuralsim train views` (:func:`collect_and_train`, logging to OUT/views.log)."""
    t = time.perf_counter()
    view_data, view_dir = out / "view_data", out / "views"
    collect_and_train(
        recipe, out / "views.log", "view", view_data,
        ["--episodes", str(recipe.view_layouts), "--policy", "turn", "--seed", str(recipe.view_seed), "--max-steps", "45",
         "--episodes-per-shard", "200"],
        ["views", "--init", str(init), "--data", str(view_data), "--out", str(view_dir), "--steps", str(recipe.view_steps),
         "--lr", str(recipe.view_lr), "--view-pairs", str(recipe.view_pairs), "--window", "1", "--batch-size", "64",
         "--warmup", "100", "--seed", str(recipe.seed), "--dtype", recipe.dtype], view_dir)
    timings["view generator (beside the dynamics)"] = time.perf_counter() - t


def collect_and_train(recipe: Recipe, log_path: Path, what: str, data: Path, collect_args: list[str],
                      train_args: list[str], train_dir: Path) -> None:
    """`neuralsim collect` of the room into ``data`` (``collect_args``; continued where ``data`` holds one, skipped
    there unless ``recipe.resume``), then `neuralsim train` with ``train_args`` (continued from ``train_dir``'s last
    checkpoint with ``recipe.resume``), each a process of its own on one worker, logging to ``log_path``. A failed
    collection writes why and trains nothing: the merge after it stops the recipe with a pointer to the log."""
    with log_path.open("a") as log:
        cli = [sys.executable, "-m", "neuralsim"]
        if not (data / "manifest.json").exists() or recipe.resume:
            collected = subprocess.run(
                cli + ["collect", "--env", "NeuralSimRoom-v0", *RECIPE_BALL_ARGS, "--out", str(data), "--workers", "1",
                       *collect_args, "--no-progress"] + (["--resume"] if (data / "manifest.json").exists() else []),
                stdout=log, stderr=subprocess.STDOUT)
            if collected.returncode != 0:
                log.write(f"\nthe {what} collection exited with {collected.returncode}\n")
                return
        subprocess.run(cli + ["train", *train_args, "--no-progress"]
                       + (["--resume"] if recipe.resume and (train_dir / "checkpoints" / "latest.json").exists() else []),
                       stdout=log, stderr=subprocess.STDOUT)


def tracker_side_job(recipe: Recipe, out: Path, init: Path) -> bool:
    """The target tracker's processes (:func:`reward_commands`: collected on one worker, ``fast_reward_steps``) from
    ``init``, logging to OUT/reward.log. False if one failed."""
    with (out / "reward.log").open("a") as log:
        for command in reward_commands(recipe, out, init, recipe.fast_reward_steps, workers=1, progress=False):
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                log.write(f"\nthe tracker's `neuralsim {command[3]}` exited with {done.returncode}\n")
                return False
    return True


def merge_part(part_dir: Path, model_dir: Path, dest: Path, prefix: str, fields: tuple[str, ...],
               start_set: Path | None = None) -> None:
    """``model_dir`` with the weights under ``prefix`` and the config ``fields`` of ``part_dir`` written to ``dest``
    (a part trained apart from the dynamics, e.g. the frame memory's depth net: ``"frame_memory.depth."``), with the
    start set of ``start_set`` (default: ``model_dir``'s)."""
    from neuralsim.checkpoints import read_config, read_weights
    from neuralsim.model import WorldModel

    weights = {k: v for k, v in read_weights(part_dir).items() if k.startswith(prefix)}
    if not weights:
        raise SystemExit(f"{part_dir} has no weights under {prefix!r}")
    model = WorldModel.from_pretrained(model_dir)
    merged = WorldModel(model.config.replace(**{f: getattr(read_config(part_dir), f) for f in fields}))
    state = {**model.state_dict(), **weights}
    merged.load_state_dict({k: v.to(merged.state_dict()[k].dtype) for k, v in state.items()})
    publish_model(merged, start_set or model_dir, dest)


def memory_stage(recipe: Recipe, init: Path, data: Path, memory_dir: Path, depth: bool = False,
                 regate: bool = False) -> Any:
    """A `neuralsim train memory` run: the frame memory's gate (``memory_steps``); with ``depth``, its depth net
    added to the gate ``init`` holds and both trained (``memory_depth_steps``, ``memory_depth_width``); with
    ``regate``, the gate alone on the depth net ``init`` holds (``memory_regate_steps``, `--memory-depth-frozen`)."""
    from neuralsim.train import TrainConfig

    steps = recipe.memory_regate_steps if regate else recipe.memory_depth_steps if depth else recipe.memory_steps
    return TrainConfig(stage="memory", out=str(memory_dir), init=str(init), data=str(data), steps=steps,
                       lr=recipe.memory_lr, window=48, batch_size=64, warmup=50, memory_rollouts=recipe.memory_rollouts,
                       seed=recipe.seed, dtype=recipe.dtype, checkpoint_every=1000, memory_depth_frozen=regate,
                       config_overrides={"frame_memory_depth_width": recipe.memory_depth_width} if depth else {},
                       resume=recipe.resume and (memory_dir / "checkpoints" / "latest.json").exists())


def memory_dirs(out: Path) -> list[Path]:
    """The frame memory stages' output directories under ``out``, the last first (what ``--install-only`` looks for)."""
    labels = [out / (f"memory_regate{i}" if stage.regate else f"memory_depth_labels{i}")
              for i, stage in reversed(list(enumerate(DEPTH_LABEL_STAGES, 1)))]
    return labels + [out / "memory_depth", out / "memory"]


def depth_label_command(recipe: Recipe, stage: DepthLabelStage, init: Path, data: Path, out: Path,
                        threads: int = 2) -> list[str]:
    """`examples/finetune_depth.py` on ``init``'s depth net (or a fresh one, ``stage.width``) for one of
    ``DEPTH_LABEL_STAGES`` (or ``FAST_DEPTH``), on ``threads`` threads (two where nothing runs beside it)."""
    frames = stage.frames if stage.frames is not None else recipe.memory_depth_label_frames
    command = [sys.executable, str(Path(__file__).with_name("finetune_depth.py")), "--model", str(init),
               "--data", str(data), "--policies", *stage.policies, "--frames", str(frames), "--steps", str(stage.steps),
               "--lr", str(stage.lr), "--threads", str(threads), "--out", str(out)]
    if stage.width:
        command += ["--width", str(stage.width)]
    if stage.edge_weight:
        command += ["--edge-weight", str(stage.edge_weight)]
    if stage.object_weight:
        command += ["--object-weight", str(stage.object_weight)]
    return command + (["--flip"] if stage.flip else [])


def fresh_dynamics(ae_dir: Path, dest: Path, seed: int, fields: dict[str, Any], data: Path | None = None,
                   window: int = 6, batch_size: int = 32) -> None:
    """A model with ``ae_dir``'s autoencoder and a freshly initialised rest (seeded as a fresh training run is, with
    ``fields`` set in its config), written to ``dest`` with ``ae_dir``'s start frames. With ``data`` its latent
    normalisation is measured there now, as a fresh run's first dynamics stage would (``window``, ``batch_size``,
    ``seed``), so a job that starts from ``dest`` beside the dynamics (the prompt start) sees the same latents."""
    import torch

    from neuralsim.model import WorldModel

    ae = WorldModel.from_pretrained(ae_dir)
    config = ae.config.replace(**fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = WorldModel(config)
    fresh.autoencoder.load_state_dict(ae.autoencoder.state_dict())
    if data is not None and fresh.config.latent_scale == 1.0 and fresh.config.latent_shift == 0.0:
        from neuralsim.data import Dataset
        from neuralsim.train import TrainConfig, latent_statistics

        with torch.no_grad():
            scale, shift = latent_statistics(fresh.eval(), Dataset(data), TrainConfig(
                stage="dynamics", data=str(data), out=str(dest), window=window, batch_size=batch_size, seed=seed))
        fresh.set_latent_normalization(scale=scale, shift=shift)
    publish_model(fresh, ae_dir, dest)


def publish_model(model: Any, start_from: Path, dest: Path) -> None:
    """``model`` (config + weights) with the start set of ``start_from`` written to ``dest``: staged in a temp dir,
    then moved into place."""
    from neuralsim.checkpoints import publish_dir, read_start_frames, write_start_frames

    tmp = dest.with_name(f".{dest.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    frames, descriptions = read_start_frames(start_from)
    if len(frames):
        write_start_frames(tmp, frames, descriptions or [""] * len(frames))
    publish_dir(tmp, dest)


def run_streaming(stages: tuple[StreamingStage, ...], init: Path, out: Path, prefix: str, recipe: Recipe,
                  common: dict[str, Any], timings: dict[str, float]) -> Path:
    """Streaming stages (`neuralsim train dynamics --streaming`), each from the last, into ``out/<prefix><i>``;
    returns the last one's directory."""
    from neuralsim.checkpoints import read_config
    from neuralsim.train import TrainConfig, train

    for i, stage in enumerate(stages):
        stage_dir = out / f"{prefix}{i + 1}"
        t = time.perf_counter()
        # the fields a stage sets that its starting model does not have yet (a later stage starts from one that has)
        current = read_config(init)
        overrides = {name: value for name, value in stage.config if getattr(current, name) != value}
        train(TrainConfig(stage="dynamics", out=str(stage_dir), init=str(init), streaming=True, steps=stage.steps,
                          config_overrides=overrides,
                          lr=stage.lr, warmup=stage.warmup, own_history=stage.own_history,
                          one_step_fraction=stage.one_step_fraction, still_windows=stage.still_windows,
                          burn_in=stage.burn_in, stop_windows=stage.stop_windows,
                          own_history_grad=stage.own_history_grad,
                          resume=recipe.resume and (stage_dir / "checkpoints" / "latest.json").exists(),
                          **{**common, "window": stage.window, "batch_size": stage.batch_size,
                             **({"data": str(out / stage.data)} if stage.data else {}),
                             "seed": recipe.seed + stage.seed_offset, "dtype": stage.dtype or common["dtype"]}))
        timings[f"{prefix} {i + 1}"] = time.perf_counter() - t
        init = stage_dir
    return init


def grow_decoder_runs(recipe: Recipe, out: Path, data: Path, source: Path,
                      stages: tuple[tuple[int, float, int, float], ...]) -> bool:
    """Grow ``source``'s decoder (``recipe.decoder_blocks``) and fine-tune it through ``stages`` ((steps, lr, seed
    offset, object weight) each; `examples/finetune_decoder.py`, a process of its own) into OUT/decoder_grown1, 2, ...,
    each from the last, logging to OUT/decoder_grown.log; a finished run is skipped. False if a run failed."""
    with (out / "decoder_grown.log").open("a") as log:
        for i, (steps, lr, seed_offset, object_weight) in enumerate(stages):
            dest = out / f"decoder_grown{i + 1}"
            if not (dest / "model.safetensors").exists():
                grow = ["--decoder-blocks", recipe.decoder_blocks] if i == 0 else []
                objects = ["--object-weight", str(object_weight)] if object_weight > 0 else []
                done = subprocess.run([sys.executable, str(Path(__file__).with_name("finetune_decoder.py")), "--model",
                                       str(source), "--data", str(data), "--steps", str(steps), "--lr", str(lr),
                                       "--seed", str(recipe.seed + seed_offset), "--out", str(dest)] + grow + objects,
                                      stdout=log, stderr=subprocess.STDOUT)
                if done.returncode != 0:
                    log.write(f"\nthe decoder growth run {i + 1} exited with {done.returncode}\n")
                    return False
            source = dest
    return True


def grow_side_job(recipe: Recipe, out: Path, data: Path, decoder_job: Any, decoder_dir: Path,
                  timings: dict[str, float]) -> None:
    """After the decoder fine-tune, on the second core: grow its decoder (``recipe.decoder_blocks``) and fine-tune it
    through ``DECODER_GROWTH`` into OUT/decoder_grown1, 2, ... (each a process of its own; OUT/decoder_grown.log)."""
    if decoder_job is not None and decoder_job.wait() != 0:
        return  # the merge before the streaming stages stops the recipe with a pointer to decoder.log
    t = time.perf_counter()
    if not grow_decoder_runs(recipe, out, data, decoder_dir, DECODER_GROWTH):
        return
    timings["decoder growth (beside the streaming stages)"] = time.perf_counter() - t


def prompt_side_job(recipe: Recipe, out: Path, init: Path, decoder_job: Any, t_decoder: float,
                    timings: dict[str, float], steps: int | None = None) -> None:
    """After the decoder fine-tune (one job per core; its time, from ``t_decoder``, is recorded here): collect the
    prompt-start data and train the generator from ``init`` (`neuralsim collect`, `neuralsim train prompt`:
    :func:`collect_and_train`), logging to OUT/prompt.log."""
    if decoder_job is not None:
        decoder_job.wait()
        timings["decoder (beside the dynamics)"] = time.perf_counter() - t_decoder
    t = time.perf_counter()
    prompt_data, prompt_dir = out / "prompt_data", out / "prompt"
    collect_and_train(
        recipe, out / "prompt.log", "prompt-start", prompt_data,
        ["--episodes", str(recipe.prompt_layouts), "--policy", "random", "--seed", str(recipe.prompt_seed),
         "--max-steps", "1", "--episodes-per-shard", "256"],
        ["prompt", "--init", str(init), "--data", str(prompt_data), "--out", str(prompt_dir), "--steps",
         str(steps or recipe.prompt_steps), "--lr", str(recipe.prompt_lr), "--window", "1", "--batch-size", "64",
         "--warmup", "100", "--seed", str(recipe.seed), "--dtype", recipe.dtype, "--latent-cache",
         str(out / "latent_cache")], prompt_dir)
    timings["prompt start (beside the dynamics)"] = time.perf_counter() - t


def merge_prompt_start(prompt_dir: Path, model_dir: Path, dest: Path) -> None:
    """``model_dir`` with the prompt-start generator of ``prompt_dir`` (trained on the same encoder and latent
    normalisation, which is checked) written to ``dest``."""
    import torch

    from neuralsim.model import WorldModel

    prompt, model = WorldModel.from_pretrained(prompt_dir), WorldModel.from_pretrained(model_dir)
    enc_p, enc_m = prompt.autoencoder.encoder.state_dict(), model.autoencoder.encoder.state_dict()
    if any(not torch.equal(enc_p[k], enc_m[k]) for k in enc_m) or (
            (prompt.config.latent_scale, prompt.config.latent_shift) != (model.config.latent_scale, model.config.latent_shift)):
        raise SystemExit(f"{prompt_dir} learned other latents than {model_dir} (another encoder or normalisation)")
    fields = {k: getattr(prompt.config, k) for k in ("prompt_start_channels", "prompt_start_tokens", "prompt_start_steps")}
    merged = WorldModel(model.config.replace(**fields))
    merged.load_state_dict({**model.state_dict(), **{f"prompt_start.{k}": v for k, v in prompt.prompt_start.state_dict().items()}})
    merged.config = merged.config.replace(provenance={**model.config.provenance, "prompt_start": {
        "from": str(prompt_dir), **prompt.config.provenance.get("train_config", {})}})
    publish_model(merged, model_dir, dest)


def merge_decoder(recipe: Recipe, decoder_job: Any, t_decoder: float, decoder_dir: Path, dynamics_dir: Path,
                  out: Path, timings: dict[str, float]) -> Path:
    """Wait for the decoder fine-tune and write ``dynamics_dir`` with that decoder into ``out/final`` (returned);
    without a decoder fine-tune, ``dynamics_dir`` itself."""
    if recipe.decoder_steps <= 0:
        return dynamics_dir
    if decoder_job is not None:
        if decoder_job.wait() != 0:
            raise SystemExit(f"the decoder fine-tune failed: see {out / 'decoder.log'}")
        # (an upper bound when nothing waited on it sooner: the time until the dynamics were done)
        timings.setdefault("decoder (beside the dynamics)", time.perf_counter() - t_decoder)
    return merge_decoder_into(decoder_dir, dynamics_dir, out / "final")


def merge_decoder_into(decoder_dir: Path, dynamics_dir: Path, dest: Path) -> Path:
    """``dynamics_dir`` with the decoder of ``decoder_dir`` (grown or not) written to ``dest`` (returned), by
    `finetune_decoder.py --merge-only`."""
    subprocess.run([sys.executable, str(Path(__file__).with_name("finetune_decoder.py")), "--model", str(decoder_dir),
                    "--merge", str(dynamics_dir), "--merge-only", "--out", str(dest)], check=True)
    return dest


def fp16_copy(model_dir: Path, dest: Path, config_updates: dict[str, Any] | None = None) -> None:
    """``model_dir`` (config.json, weights, start set) → ``dest`` with the weights in fp16 (half the bytes;
    ``from_pretrained`` casts them back to the model's fp32) and ``config_updates`` set in its config, staged in a
    temp dir and then moved into place."""
    import json

    from neuralsim.checkpoints import (CONFIG_NAME, START_FRAMES_NAME, atomic_write_bytes, publish_dir, read_weights,
                                       write_weights)

    tmp = dest.with_name(f".{dest.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (CONFIG_NAME, START_FRAMES_NAME):
        data = (model_dir / name).read_bytes()
        if name == CONFIG_NAME and config_updates:
            data = (json.dumps({**json.loads(data), **config_updates}, indent=2) + "\n").encode()
        atomic_write_bytes(tmp / name, data)
    weights = read_weights(model_dir)
    write_weights(tmp, {k: v.half() if v.is_floating_point() else v for k, v in weights.items()})
    publish_dir(tmp, dest)


def redraw_start_set(model_dir: Path, first_seed: int) -> None:
    """Replace ``model_dir``'s start set by the room's default task in the same rooms: the first frames of
    ``NeuralSimRoom-v0`` (its defaults: since 2026-12-07 the ball at rest) at seeds ``first_seed``, ``first_seed + 1``,
    ... The recipe's start set is the first frames of its reward episodes (``Recipe.reward_seed``), collected with the
    ball thrown (:data:`RECIPE_BALL`); a ``SanaWM-v0`` reset should show the task it scores.

    Raises:
        ValueError: a room's description differs from the start set's (they are not those seeds' rooms)."""
    import gymnasium as gym
    import numpy as np

    from neuralsim.checkpoints import read_start_frames, write_start_frames

    frames, descriptions = read_start_frames(model_dir)
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(frames.shape[1:3]))
    redrawn = []
    for i, description in enumerate(descriptions):
        obs, info = env.reset(seed=first_seed + i)
        if info["description"] != description:
            env.close()
            raise ValueError(f"start frame {i} of {model_dir} is not the room of seed {first_seed + i}: its description "
                             f"{description!r}, the room's {info['description']!r}")
        redrawn.append(obs)
    env.close()
    write_start_frames(model_dir, np.stack(redrawn), list(descriptions))


def install(model_dir: Path) -> None:
    """Copy a trained model, weights in fp16, into neuralsim/assets/default/ (what `gym.make("SanaWM-v0")` loads),
    with ``INSTALL_CONFIG`` set and its start set drawn in the room's default task (:func:`redraw_start_set`)."""
    from neuralsim.checkpoints import publish_dir

    assets = Path(__file__).resolve().parent.parent / "neuralsim" / "assets" / "default"
    staged = assets.with_name(".default-install")  # the start set redrawn before the assets change
    fp16_copy(model_dir, staged, INSTALL_CONFIG)
    redraw_start_set(staged, Recipe.reward_seed)
    publish_dir(staged, assets)
    print(f"installed into {assets}")


if __name__ == "__main__":
    main()
