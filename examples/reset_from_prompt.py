"""Start a dream from a sentence: the model generates the first frame, then the keys drive it; writes a GIF.

    python examples/reset_from_prompt.py --prompt "a red ball near the blue wall" --keys "w-16,l-8"

Prompts work best in the room's own language (``info["description"]`` of ``NeuralSimRoom-v0``, or ``info["prompt"]``
of a plain ``env.reset()``, shows one): the shipped model's prompt-start generator learned it from 20,000 layouts
(README, "Start from a sentence"). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import neuralsim  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model name or checkpoint directory")
    p.add_argument("--prompt", default="a room with a checkered grey floor, a blue north wall, a red east wall, a yellow "
                                       "south wall and a green west wall; a red ball near the blue wall; target: the red ball")
    p.add_argument("--keys", default="w-8,l-8,w-8", help="key DSL: w/s forward/back, a/d strafe, j/l yaw, i/k pitch")
    p.add_argument("--out", default="dream_from_prompt.gif")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from neuralsim.envs import WorldModelEnv
    from neuralsim.rollout import write_video

    try:
        env = WorldModelEnv(model=args.model)
        obs, info = env.reset(seed=args.seed, options={"prompt": args.prompt})
        *_, terminated, truncated, last_info, frames = env.step_keys(args.keys)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_video(args.out, np.stack([obs, *frames]))
    env.close()
    print(json.dumps({"model": args.model, "prompt": info["prompt"], "frames": 1 + len(frames),
                      "steps": last_info["step"], "terminated": bool(terminated), "truncated": bool(truncated),
                      "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
