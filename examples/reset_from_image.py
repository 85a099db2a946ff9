"""Start a dream from your own picture and drive it with the camera key DSL; writes a GIF.

    python examples/reset_from_image.py --image photo.png --keys "w-8,l-8,w-8" --out dream.gif
    python examples/reset_from_image.py            # a synthetic test picture, the shipped default model

The image is resized to the model's resolution (``options={"resize": True}``); without ``--image`` a
picture is drawn here (a floor, a wall and a red disc). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import neuralsim  # noqa: F401


def synthetic_picture(height: int = 96, width: int = 96) -> np.ndarray:
    """A grey floor, a blue wall and a red disc: uint8 ``[H, W, 3]``."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[: height // 2] = (60, 90, 200)
    img[height // 2 :] = (120, 120, 120)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 0.6 * height) ** 2 + (xx - 0.5 * width) ** 2 < (0.12 * height) ** 2
    img[disc] = (220, 40, 40)
    return img


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model name or checkpoint directory")
    p.add_argument("--image", default=None, help="image file (png/jpg); default: a synthetic picture")
    p.add_argument("--keys", default="w-8,l-8,w-8", help="key DSL: w/s forward/back, a/d strafe, j/l yaw, i/k pitch")
    p.add_argument("--out", default="dream_from_image.gif")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from neuralsim.envs import WorldModelEnv
    from neuralsim.rollout import write_video

    try:
        env = WorldModelEnv(model=args.model)
        if args.image:
            import imageio.v3 as iio

            image = np.asarray(iio.imread(args.image))[..., :3].astype(np.uint8)
        else:
            image = synthetic_picture()
        obs, info = env.reset(seed=args.seed, options={"image": image, "resize": True})
        *_, terminated, truncated, last_info, frames = env.step_keys(args.keys)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_video(args.out, np.stack([obs, *frames]))
    env.close()
    print(json.dumps({"model": args.model, "frames": 1 + len(frames), "steps": last_info["step"],
                      "terminated": bool(terminated), "truncated": bool(truncated), "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
