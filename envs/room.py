"""The real world neuralsim learns from: a small MuJoCo room seen by a first-person camera.

Built in code (an MJCF string; no asset downloads), rendered headless through EGL (or OSMesa),
fast enough to collect data on a laptop CPU: see ``benchmarks/room_speed.py``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from neuralsim import actions as A

# Named colours: every colour in a layout has a name, so the description can say it.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.13, 0.13),
    "green": (0.18, 0.68, 0.24),
    "blue": (0.18, 0.33, 0.85),
    "yellow": (0.93, 0.84, 0.18),
    "orange": (0.95, 0.52, 0.12),
    "purple": (0.54, 0.24, 0.74),
    "cyan": (0.18, 0.78, 0.84),
    "pink": (0.95, 0.52, 0.70),
    "white": (0.92, 0.92, 0.90),
    "grey": (0.50, 0.50, 0.52),
    "brown": (0.52, 0.34, 0.18),
    "black": (0.10, 0.10, 0.11),
}
WALL_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "white", "grey", "brown")
FLOOR_COLOURS = ("grey", "brown", "white", "blue", "green", "black", "purple", "orange")
OBJECT_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "white", "black")
# Colours a target can be made unique by (``target_colour``): object colours that no floor has.
TARGET_COLOURS = tuple(c for c in OBJECT_COLOURS if c not in FLOOR_COLOURS)
WALLS = ("north", "east", "south", "west")  # +y, +x, -y, -x in MuJoCo world coordinates
FLOOR_TEXTURES = ("checkered", "speckled", "plain")
WALL_TEXTURES = ("plain", "gradient", "speckled", "checkered")
# (name, kind, half size): the objects of every layout; colours and positions are drawn per reset.
OBJECTS: tuple[tuple[str, str, float], ...] = (("ball", "ball", 0.12), ("box0", "box", 0.15), ("box1", "box", 0.12), ("box2", "box", 0.2))

# Fixed geometry (metres, seconds).
AGENT_RADIUS = 0.15
CAMERA_HEIGHT = 0.6
WALL_HEIGHT = 2.0  # walls reach the ceiling: a closed room
CEILING_HEIGHT = 2.0
TIMESTEP = 0.01
FRAME_SKIP = 5  # physics steps per env step -> 20 env steps per simulated second
FOVY_DEG = 70.0
# The optional soft body: a MuJoCo flex cube (2x2x2 vertices held by edge-length equality constraints) that
# squashes and wobbles when pushed. 8 vertices keep it cheap; see benchmarks/room_speed.py for its cost.
SOFT_HALF = 0.1
SOFT_VERTEX_RADIUS = 0.03

_INSTALL_HINT = 'NeuralSimRoom-v0 needs MuJoCo: pip install "neuralsim[mujoco]"'

# OpenCV world axes (+X right, +Y down, +Z forward of a camera at yaw 0) in MuJoCo world axes
# (x east, y north, z up): X = -y, Y = -z, Z = +x. pose_cv = _MJ_TO_CV @ pose_mujoco.
_MJ_TO_CV = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
_CAM_TO_CV_COLUMNS = np.array([1.0, -1.0, -1.0])  # MuJoCo camera (right, up, back) -> OpenCV (right, down, forward)


def _import_mujoco() -> Any:
    """Import mujoco; choose the headless GL backend (EGL, or OSMesa when only OSMesa is installed)."""
    os.environ.setdefault("LP_NUM_THREADS", "0")  # Mesa llvmpipe: threads cost more than they give at 64x64
    if "MUJOCO_GL" not in os.environ:
        import ctypes.util

        has_egl = ctypes.util.find_library("EGL") is not None
        has_osmesa = ctypes.util.find_library("OSMesa") is not None
        os.environ["MUJOCO_GL"] = "osmesa" if (has_osmesa and not has_egl) else "egl"
    try:
        import mujoco
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return mujoco


def _gl_context(width: int, height: int) -> Any:
    """An offscreen OpenGL context for the backend named by ``MUJOCO_GL`` (read now, not at mujoco import).

    So the room renders headless even when mujoco was imported before this module set ``MUJOCO_GL``.
    """
    backend = os.environ.get("MUJOCO_GL", "egl").lower().strip() or "egl"
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        elif backend == "osmesa":
            from mujoco.osmesa import GLContext
        elif backend in ("glfw", "glx"):
            from mujoco.glfw import GLContext
        else:
            raise ValueError(f"unsupported MUJOCO_GL={backend!r}")
        return GLContext(width, height)
    except Exception as err:  # noqa: BLE001  (any backend failure: explain what to try)
        other = "osmesa" if backend == "egl" else "egl"
        raise RuntimeError(
            f"NeuralSimRoom-v0 could not create an OpenGL context with MUJOCO_GL={backend!r} ({type(err).__name__}: {err}). "
            f"Try MUJOCO_GL={other} (set before starting Python; needs lib{'OSMesa' if other == 'osmesa' else 'EGL'})."
        ) from err


class _OffscreenRenderer:
    """Minimal headless renderer of one fixed camera: scene update, render, read back (``[H, W, 3]`` uint8)."""

    _current: int | None = None  # id of the renderer whose context is current (one thread renders)

    def __init__(self, mj: Any, model: Any, camera_id: int, height: int, width: int) -> None:
        self.mj = mj
        self.context = _gl_context(width, height)
        self.context.make_current()
        _OffscreenRenderer._current = id(self)
        self.scene = mj.MjvScene(model, maxgeom=64)
        self.mjr = mj.MjrContext(model, mj.mjtFontScale.mjFONTSCALE_100.value)
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN.value, self.mjr)
        self.rect = mj.MjrRect(0, 0, width, height)
        self.camera = mj.MjvCamera()
        self.camera.type = mj.mjtCamera.mjCAMERA_FIXED
        self.camera.fixedcamid = camera_id
        self.buffer = np.empty((height, width, 3), dtype=np.uint8)
        self.catmask = int(mj.mjtCatBit.mjCAT_ALL)

    def render(self, model: Any, data: Any, option: Any) -> np.ndarray:
        mj = self.mj
        if _OffscreenRenderer._current != id(self):
            self.context.make_current()
            _OffscreenRenderer._current = id(self)
        mj.mjv_updateScene(model, data, option, None, self.camera, self.catmask, self.scene)
        mj.mjr_render(self.rect, self.scene, self.mjr)
        mj.mjr_readPixels(self.buffer, None, self.rect, self.mjr)
        return self.buffer[::-1].copy()  # OpenGL rows are bottom-up

    def render_segmentation(self, model: Any, data: Any, option: Any) -> np.ndarray:
        """``[H, W, 2]`` int32 ``(object id, object type)`` of every pixel (``-1`` for none), MuJoCo's segmentation
        render (``mjRND_SEGMENT`` + ``mjRND_IDCOLOR``) of the same camera and context. The scene flags are
        restored afterwards, so the rgb frames of :meth:`render` do not change."""
        mj = self.mj
        if _OffscreenRenderer._current != id(self):
            self.context.make_current()
            _OffscreenRenderer._current = id(self)
        flags = self.scene.flags.copy()
        try:
            self.scene.flags[mj.mjtRndFlag.mjRND_SEGMENT] = True
            self.scene.flags[mj.mjtRndFlag.mjRND_IDCOLOR] = True
            mj.mjv_updateScene(model, data, option, None, self.camera, self.catmask, self.scene)
            mj.mjr_render(self.rect, self.scene, self.mjr)
            rgb = np.empty_like(self.buffer)
            mj.mjr_readPixels(rgb, None, self.rect, self.mjr)
        finally:
            self.scene.flags[:] = flags
        seg = rgb[::-1].astype(np.int64)
        segid = seg[..., 0] + seg[..., 1] * 256 + seg[..., 2] * 65536  # 0: background, else scene geom index + 1
        table = np.full((self.scene.ngeom + 1, 2), -1, dtype=np.int32)
        for g in self.scene.geoms[: self.scene.ngeom]:
            if g.segid >= 0:
                table[g.segid + 1] = (g.objid, g.objtype)
        return table[np.clip(segid, 0, self.scene.ngeom)]

    def render_depth(self, model: Any, data: Any, option: Any) -> np.ndarray:
        """``[H, W]`` float32: each pixel's depth along the camera's optical axis (model units), from the depth buffer
        of the same camera and context (MuJoCo's nonlinear buffer mapped back with the scene's near and far planes)."""
        mj = self.mj
        if _OffscreenRenderer._current != id(self):
            self.context.make_current()
            _OffscreenRenderer._current = id(self)
        mj.mjv_updateScene(model, data, option, None, self.camera, self.catmask, self.scene)
        mj.mjr_render(self.rect, self.scene, self.mjr)
        depth = np.empty(self.buffer.shape[:2], dtype=np.float32)
        mj.mjr_readPixels(None, depth, self.rect, self.mjr)
        extent = model.stat.extent
        near, far = model.vis.map.znear * extent, model.vis.map.zfar * extent
        return (near / (1 - depth[::-1] * (1 - near / far))).astype(np.float32)

    def close(self) -> None:
        if self.context is None:
            return
        self.context.make_current()
        self.mjr.free()
        self.context.free()
        self.context = None
        _OffscreenRenderer._current = None


def _build_mjcf(room_half: float, height: int, width: int, soft_body: bool = False) -> str:
    """The fixed structure of the room; colours, textures and positions are set per reset."""
    L, t = room_half, 0.1
    h = WALL_HEIGHT / 2
    walls = {
        "north": (f"0 {L + t} {h}", f"{L + 2 * t} {t} {h}"),
        "east": (f"{L + t} 0 {h}", f"{t} {L + 2 * t} {h}"),
        "south": (f"0 {-L - t} {h}", f"{L + 2 * t} {t} {h}"),
        "west": (f"{-L - t} 0 {h}", f"{t} {L + 2 * t} {h}"),
    }
    wall_xml = "\n".join(
        f'    <geom name="wall_{n}" type="box" pos="{p}" size="{s}" material="mat_wall_{n}"/>' for n, (p, s) in walls.items()
    )
    wall_mats = "\n".join(f'    <material name="mat_wall_{n}" texture="tex_wall_plain" texuniform="true" texrepeat="1 1"/>' for n in WALLS)
    objects = []
    for name, kind, r in OBJECTS:
        if kind == "ball":
            geom = (
                f'<geom name="{name}" type="sphere" size="{r}" mass="0.3" condim="6" friction="0.8 0.01 0.002" '
                f'solref="0.02 0.15" rgba="1 0 0 1" material="mat_object"/>'
            )
        else:
            geom = f'<geom name="{name}" type="box" size="{r} {r} {r}" mass="{8 * r ** 3 * 300:.3f}" friction="0.7" rgba="0 1 0 1" material="mat_object"/>'
        objects.append(f'    <body name="{name}" pos="0 0 {r}"><freejoint name="{name}_free"/>{geom}</body>')
    if soft_body:  # built at the origin; reset shifts its vertices to the layout's position
        objects.append(
            f'    <flexcomp name="soft" type="grid" dim="3" count="2 2 2" spacing="{2 * SOFT_HALF} {2 * SOFT_HALF} {2 * SOFT_HALF}" '
            f'pos="0 0 {SOFT_HALF + SOFT_VERTEX_RADIUS}" radius="{SOFT_VERTEX_RADIUS}" mass="0.4" rgba="1 0 1 1">'
            '<edge equality="true" damping="0.2" solref="0.08 0.5"/><contact condim="3" selfcollide="none"/></flexcomp>'
        )
    object_xml = "\n".join(objects)
    off_w, off_h = max(width, 64), max(height, 64)
    return f"""
<mujoco model="neuralsim_room">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast"/>
  <statistic extent="2" center="0 0 1"/>
  <visual>
    <global offwidth="{off_w}" offheight="{off_h}" fovy="{FOVY_DEG}"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="8" numquads="1"/>
    <map znear="0.02" zfar="50"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="tex_checker" type="2d" builtin="checker" rgb1="1 1 1" rgb2="0.62 0.62 0.62" width="64" height="64"/>
    <texture name="tex_speckle" type="2d" builtin="flat" rgb1="0.85 0.85 0.85" mark="random" random="0.08" markrgb="1 1 1" width="64" height="64"/>
    <texture name="tex_gradient" type="2d" builtin="gradient" rgb1="1 1 1" rgb2="0.45 0.45 0.45" width="64" height="64"/>
    <texture name="tex_wall_plain" type="2d" builtin="flat" rgb1="1 1 1" width="8" height="8"/>
    <material name="mat_floor" texture="tex_checker" texuniform="true" texrepeat="1 1" specular="0"/>
{wall_mats}
    <material name="mat_ceiling" rgba="0.95 0.95 0.95 1" specular="0"/>
    <material name="mat_object" specular="0.3" shininess="0.3"/>
  </asset>
  <worldbody>
    <light name="top" pos="0 0 {CEILING_HEIGHT - 0.05}" dir="0 0 -1" directional="false" castshadow="false"
           diffuse="0.5 0.5 0.5" attenuation="1 0 0"/>
    <geom name="floor" type="plane" size="{L} {L} 0.1" material="mat_floor"/>
    <geom name="ceiling" type="box" pos="0 0 {CEILING_HEIGHT + 0.05}" size="{L + 2 * t} {L + 2 * t} 0.05"
          material="mat_ceiling" contype="0" conaffinity="0"/>
{wall_xml}
    <body name="agent" pos="0 0 {CAMERA_HEIGHT / 2}">
      <joint name="agent_x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="agent_y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="agent_yaw" type="hinge" axis="0 0 1"/>
      <geom name="agent" type="cylinder" size="{AGENT_RADIUS} {CAMERA_HEIGHT / 2 - 0.05}" mass="20" group="3" friction="0.3"/>
      <camera name="eye" pos="0 0 {CAMERA_HEIGHT / 2}" xyaxes="0 -1 0 0 0 1" fovy="{FOVY_DEG}"/>
    </body>
{object_xml}
  </worldbody>
  <actuator>
    <velocity name="agent_vx" joint="agent_x" kv="2000" ctrlrange="-5 5" forcerange="-600 600"/>
    <velocity name="agent_vy" joint="agent_y" kv="2000" ctrlrange="-5 5" forcerange="-600 600"/>
  </actuator>
</mujoco>
"""


def facing_wall(yaw: float) -> str:
    """The wall (:data:`WALLS`) a camera at ``yaw`` faces, to the nearest quarter turn (the room's frame: yaw 0 looks
    along +x, east; counter-clockwise)."""
    return ("east", "north", "west", "south")[int(round(yaw / (math.pi / 2))) % 4]


#: How a description states the start heading (``describe_view=True``): this, then the wall.
VIEW_PREFIX = "the camera starts facing "


def view_clause(layout: dict[str, Any]) -> str:
    """The sentence's clause for where the camera starts (``describe_view=True``), in the room's own words:
    ``"the camera starts facing the yellow south wall"``."""
    wall = facing_wall(float(layout["agent_yaw"]))
    return f"{VIEW_PREFIX}the {layout['wall_colours'][wall]} {wall} wall"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _make_colour_unique(layout: dict[str, Any], colour: str) -> None:
    """Give the layout's target ``colour`` and take it from every wall and other object (no random draw, so a seed's
    room keeps its geometry): what had it gets the target's drawn colour, or, where that is ``colour`` itself or not
    a colour of its kind (a black object colour on a wall), the first colour of its kind the room does not use."""
    target = layout["target"]
    objects, walls = layout["object_colours"], layout["wall_colours"]
    drawn = objects[target]
    used = {layout["floor_colour"], *walls.values(), *objects, colour}

    def spare(options: Sequence[str]) -> str:
        return drawn if drawn != colour and drawn in options else next(c for c in options if c not in used)

    objects[target] = colour
    for i, c in enumerate(objects):
        if i != target and c == colour:
            objects[i] = spare(OBJECT_COLOURS)
    for wall, c in walls.items():
        if c == colour:
            walls[wall] = spare(WALL_COLOURS)


class NeuralSimRoomEnv(gym.Env):
    """A first-person camera in a MuJoCo room with a ball and boxes; the task is to reach the ball.

    ## Description

    A closed square room (floor, four walls, ceiling) with seeded random colours and procedural
    textures (checkered, speckled, gradient, plain), a bouncing, rolling ball and three boxes the
    agent can push. The agent is a cylinder carrying a camera at 0.6 m; it moves on the floor
    (MuJoCo velocity actuators, so walls and objects block it and objects get pushed), yaws, and
    tilts the camera (pitch, clamped to ±85°). Controls are those of SANA-WM's key DSL
    (:mod:`neuralsim.actions`): ``w``/``s`` forward/back, ``a``/``d`` strafe, ``j``/``l`` yaw,
    ``i``/``k`` pitch; ``env.unwrapped.step_keys("w-8,l-4")`` runs a DSL string. Every reset
    draws a layout from the seed and writes it down as text (``info["description"]``), e.g.
    ``"a room with a checkered grey floor, ...; a red ball near the blue wall; ...; target: the red ball"``.

    The default task is one a pixel policy can solve: the target is always the ball, it is red, and
    nothing else in the room is (``target_colour``), and the agent starts facing it (within
    ``start_view_deg`` of its bearing), so the target is in the first frame unless a box hides it. (A ball
    2-3 m away is 3-5 pixels across at 64×64; told apart only by its round shape, PPO did not learn to find it:
    ``benchmarks/ppo_observation.py``.) ``target=None`` is the
    older task whose target object is drawn per layout and named only in the description.

    ## Action Space

    ``action_type="continuous"`` (default): ``Box(-1.0, 1.0, (4,), float32)``, the canonical camera
    action ``[forward, strafe_right, yaw_right, pitch_up]`` (velocities; ±1 = a held key). One step
    moves up to ``translation_speed`` (0.08 m) and turns up to ``rotation_speed_deg`` (4°).

    ``action_type="discrete"``: ``Discrete(11)``, key sets :data:`neuralsim.actions.DISCRETE_KEYSETS`:

    | index | 0    | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9  | 10 |
    |-------|------|---|---|---|---|---|---|---|---|----|----|
    | keys  | none | w | s | a | d | j | l | i | k | wj | wl |

    ## Observation Space

    ``Box(0, 255, (64, 64, 3), uint8)``: the rgb camera image (``(H, W, 3)`` for ``image_size=(H, W)``).

    ``info`` holds ``"description"`` (str), ``"target"`` (e.g. ``"the red ball"``), ``"pose"``
    (``[4, 4]`` float32 camera-to-world in OpenCV axes as SANA-WM: +X right, +Y down, +Z forward;
    world origin at the floor's centre, world +Z toward the east wall, +X toward the south wall,
    +Y down, so a camera facing east has the identity rotation), ``"camera"`` (the 20-number form:
    flattened pose + ``fx, fy, cx, cy``), ``"intrinsics"`` (``[fx, fy, cx, cy]`` float32 pixels),
    ``"target_distance"`` (metres, horizontal), ``"target_position"`` (the target's centre, ``[3]`` float32 in the pose's
    world axes; ``collect`` records it per frame), ``"success"`` (bool).

    Yaw and pitch follow :func:`neuralsim.actions.action_string_to_c2w` exactly (with
    ``rotation_speed_deg``); translation is physical: up to ``translation_speed`` per step along the
    horizontal forward/right axes, less when blocked. The agent is a velocity servo (gain 100/s, force limit 30 m/s²
    per world axis), so a step from rest covers 0.56–0.71 of a full step and the step after the keys are let go
    still 0.29–0.44 (``camera_spec`` states the servo: :class:`neuralsim.camera.TranslationResponse`).

    ## Rewards

    ``progress_reward_scale * (previous target distance - target distance)`` every step (metres of
    progress × 10 by default), plus ``success_bonus`` (10) on the step the target is reached (below).
    ``env.task_spec`` states it in numbers (``collect`` records it; a target-tracking reward model computes it).

    ## Starting State

    Drawn from ``self.np_random``: floor and wall colours and textures, object colours, object
    positions (apart from each other), the target object (the ball unless ``target`` says otherwise),
    the agent position (at least 1.5 m from the target) and heading: uniform, or with
    ``start_view_deg`` (default 25) within that many degrees of the bearing to the target; pitch 0. The ball
    starts on the floor, still, until something pushes it (``ball_start="rest"``, the default);
    ``ball_start="thrown"``: up to 0.5 m above the floor with a small horizontal velocity, so it bounces and rolls
    (the world of the shipped model's data). ``reset(options={"agent_xy": (x, y), "agent_yaw": radians})``
    overrides the agent's start (room frame: x east, y north, origin at the centre, yaw counter-clockwise from
    east); the layout is still drawn from the seed.

    ## Episode End

    Terminated (success) when the agent's centre is within ``reach_radius`` (0.9 m, horizontally) of
    the target's centre **and** the step's frame shows at least ``success_pixels`` (20) pixels of the
    target (MuJoCo's segmentation render, made only within reach), so the frame that pays the bonus
    shows what earned it: a pixel policy, and a world model's reward model, can see the success. (At
    0.69 m the ball leaves the bottom of the 70° view from the camera's 0.6 m, so a success within
    0.5 m by distance alone was seen on few of its frames.)
    Truncated after ``max_episode_steps`` (200) steps.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> import neuralsim
    >>> env = gym.make("NeuralSimRoom-v0", render_mode="rgb_array")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> info["target"], info["pose"].shape, info["camera"].shape
    ('the red ball', (4, 4), (20,))
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> env.close()

    ```

    * ``render_mode``: ``None`` or ``"rgb_array"`` (``render()`` returns the last observation).
    * ``image_size``: ``64`` or ``(H, W)``.
    * ``action_type``: ``"continuous"`` or ``"discrete"``.
    * ``max_episode_steps``: the env's own truncation limit (default 200; ``None``: none). Note that
      ``gym.make(..., max_episode_steps=N)`` is consumed by ``gym.make``, which adds a ``TimeLimit(N)``
      wrapper; the env's own limit still applies, so pass ``max_episode_steps=None`` to the
      constructor (or register with it) for episodes longer than 200 steps.
    * ``room_size``: side of the square room in metres (default 5).
    * ``translation_speed`` (m per step, 0.08), ``rotation_speed_deg`` (yaw/pitch ° per step, 4).
    * ``reach_radius`` (0.9), ``progress_reward_scale`` (10), ``success_bonus`` (10).
    * ``success_pixels``: pixels of the target the success frame must show (default 20); ``None``: the
      distance alone.
    * ``target``: an object name (``"ball"``, the default, ``"box0"``, ``"box1"``, ``"box2"``) that is
      the target of every layout, so a pixel-only policy can tell it; or ``None``: the target object is
      drawn per layout (its identity is only in the description, not visible as such in the pixels).
    * ``target_colour``: ``"red"`` (default), ``"yellow"``, ``"cyan"`` or ``"pink"`` (:data:`TARGET_COLOURS`,
      colours no floor has): the target always has that colour and no wall or other object has it (they get the
      colour the target had, or one the room does not use), so it is the one thing of its colour in every frame; positions and the start are
      those of the seed's room. ``None``: the target's colour is drawn like every object's.
    * ``start_view_deg``: the start heading is within this many degrees (0-180) of the bearing to the
      target (default 25: the target is in view, the camera's half field of view being 35°); ``None``:
      a uniform heading. ``reset(options={"agent_yaw": ...})`` still overrides it.
    * ``describe_view``: end the description with where the camera starts, in the room's words
      (``"...; the camera starts facing the yellow south wall"``: the wall nearest its heading, :func:`view_clause`),
      so a sentence also says what lies behind the camera (``benchmarks/prompt_heading.py``). Off by default: the
      shipped model's data has no such clause.
    * ``ball_start``: ``"rest"`` (default: on the floor, still, until something pushes it, so a world model that
      starts from one frame can know where it is going) or ``"thrown"`` (up to 0.5 m above the floor with up to
      0.8 m/s horizontally, drawn per layout, so the ball falls, bounces and rolls for a while: its velocity is not in
      the first frame; the default until 2026-12-07, the world the shipped model was trained on). The rest of the
      layout is the seed's either way. ``neuralsim eval transfer`` scores agents with the ball at rest (the class's
      ``TRANSFER_TASK``). Why the default: a dream started from one frame scores the task at rest (success F1 0.85
      on the fidelity benchmark's rooms) and not the thrown one (0.67): README, "Train agents in the dream".
    * ``soft_body``: add a soft cube (a MuJoCo flex: 2×2×2 vertices held by edge-length equality
      constraints) that squashes and wobbles when pushed; drawn after the rest of the layout, so a
      seed gives the same room with and without it. Off by default: the shipped model was trained
      without it, and it costs ~20-50 % of the physics speed (``benchmarks/room_speed.py``).

    Needs MuJoCo (``pip install "neuralsim[mujoco]"``). Rendering is headless: ``MUJOCO_GL=egl``
    unless set (``osmesa`` when only OSMesa is present); ``LP_NUM_THREADS=0`` unless set.

    ## Version History

    * v0: initial version. Since neuralsim 0.1 (2026-11-30) the default task is the ball, started in
      view (``target="ball"``, ``start_view_deg=25``); ``target=None, start_view_deg=None`` gives the
      layouts and starts of earlier datasets (they record their ``env_kwargs``). Since 2026-12-01 a
      success needs the target in view within 0.9 m (``reach_radius=0.9, success_pixels=20``); the
      earlier task: ``reach_radius=0.5, success_pixels=None``. Since 2026-12-02 the target is red and the only
      red thing (``target_colour="red"``); ``target_colour=None`` gives the earlier colours. Since
      2026-12-02 ``task_spec`` also states ``walkable_half_extent`` (the dynamics are unchanged).
      Since 2026-12-05 ``describe_view=True`` adds the start heading to the description (off by default).
      Since 2026-12-06 ``ball_start="rest"`` starts the ball still on the floor. Since 2026-12-07 that is the
      default task; ``ball_start="thrown"`` gives the earlier one (the dynamics are unchanged). ``task_spec`` now
      states ``ball_start``, so ``collect --resume`` refuses a dataset collected before (its task does not say it)
      rather than mix two starts in one dataset: continue it in a new directory.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1.0 / (TIMESTEP * FRAME_SKIP)))}
    # Arguments that choose the task, not the world: a world model of the room serves any of them, and
    # `neuralsim eval transfer` drops them from a model's recorded data kwargs (the agents face the env's task,
    # TRANSFER_TASK below).
    TASK_OPTIONS = ("target", "target_colour", "start_view_deg", "reach_radius", "progress_reward_scale", "success_bonus",
                    "success_pixels", "ball_start")
    BALL_STARTS = ("thrown", "rest")
    # The task `neuralsim eval transfer` trains and scores agents on (neuralsim.agents.transfer.transfer_task): the
    # ball at rest, since a dream started from one frame cannot see a thrown ball's velocity.
    TRANSFER_TASK = {"ball_start": "rest"}

    def __init__(
        self,
        render_mode: str | None = None,
        image_size: int | Sequence[int] = 64,
        action_type: str = "continuous",
        max_episode_steps: int | None = 200,
        room_size: float = 5.0,
        translation_speed: float = 0.08,
        rotation_speed_deg: float = 4.0,
        reach_radius: float = 0.9,
        progress_reward_scale: float = 10.0,
        success_bonus: float = 10.0,
        soft_body: bool = False,
        target: str | None = "ball",
        start_view_deg: float | None = 25.0,
        success_pixels: int | None = 20,
        target_colour: str | None = "red",
        describe_view: bool = False,
        ball_start: str = "rest",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if isinstance(image_size, (int, np.integer)):
            image_size = (int(image_size), int(image_size))
        if (
            not isinstance(image_size, Sequence)
            or len(image_size) != 2
            or not all(isinstance(s, (int, np.integer)) and 8 <= s <= 4096 for s in image_size)
        ):
            raise ValueError(f"image_size must be an int or (height, width) of ints in [8, 4096], got {image_size!r}")
        if action_type not in ("continuous", "discrete"):
            raise ValueError(f"action_type must be 'continuous' or 'discrete', got {action_type!r}")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps <= 0):
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        if not 3.0 <= float(room_size) <= 20.0:
            raise ValueError(f"room_size must be in [3, 20] metres, got {room_size!r}")
        for name, value in (("translation_speed", translation_speed), ("rotation_speed_deg", rotation_speed_deg), ("reach_radius", reach_radius)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.render_mode = render_mode
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.action_type = action_type
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.room_half = float(room_size) / 2
        self.translation_speed = float(translation_speed)
        self.rotation_speed_deg = float(rotation_speed_deg)
        self.reach_radius = float(reach_radius)
        self.progress_reward_scale = float(progress_reward_scale)
        self.success_bonus = float(success_bonus)
        self.dt = TIMESTEP * FRAME_SKIP

        H, W = self.image_size
        self.observation_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        if action_type == "continuous":
            self.action_space = spaces.Box(-1.0, 1.0, (A.CAMERA_ACTION_DIM,), np.float32)
        else:
            self.action_space = spaces.Discrete(len(A.DISCRETE_KEYSETS))
        self._keyset_vectors = A.keysets_to_vectors()

        fy = 0.5 * H / math.tan(math.radians(FOVY_DEG) / 2)  # MuJoCo's fovy is vertical; square pixels
        self.intrinsics = np.array([fy, fy, W / 2, H / 2], dtype=np.float32)

        self._mujoco = _import_mujoco()
        mj = self._mujoco
        names = [name for name, _, _ in OBJECTS]
        if target is not None and target not in names:
            raise ValueError(f"target must be None (drawn per layout) or one of {names}, got {target!r}")
        self.fixed_target = None if target is None else names.index(target)
        if start_view_deg is not None and (isinstance(start_view_deg, bool) or not isinstance(start_view_deg, (int, float, np.number))
                                           or not 0.0 <= float(start_view_deg) <= 180.0):
            raise ValueError(f"start_view_deg must be None (uniform heading) or degrees in [0, 180], got {start_view_deg!r}")
        self.start_view_deg = None if start_view_deg is None else float(start_view_deg)
        if ball_start not in self.BALL_STARTS:
            raise ValueError(f"ball_start must be one of {self.BALL_STARTS}, got {ball_start!r}")
        self.ball_start = ball_start
        if success_pixels is not None and (isinstance(success_pixels, bool) or not isinstance(success_pixels, (int, np.integer))
                                           or success_pixels < 1):
            raise ValueError(f"success_pixels must be None (distance alone) or an int >= 1 (pixels of the target in "
                             f"view), got {success_pixels!r}")
        self.success_pixels = None if success_pixels is None else int(success_pixels)
        if target_colour is not None and target_colour not in TARGET_COLOURS:
            raise ValueError(f"target_colour must be None (drawn like every object's) or one of {list(TARGET_COLOURS)} "
                             f"(colours no floor has), got {target_colour!r}")
        self.target_colour = target_colour
        if not isinstance(describe_view, (bool, np.bool_)):
            raise ValueError(f"describe_view must be True or False, got {describe_view!r}")
        self.describe_view = bool(describe_view)
        self.soft_body = bool(soft_body)
        self.model = mj.MjModel.from_xml_string(_build_mjcf(self.room_half, H, W, self.soft_body))
        self.data = mj.MjData(self.model)
        self._renderer: _OffscreenRenderer | None = None  # created on first reset (an OpenGL context)
        self._scene_option = mj.MjvOption()
        self._scene_option.geomgroup[3] = 0  # the agent's own body is invisible to its camera

        def idx(kind: Any, name: str) -> int:
            return int(mj.mj_name2id(self.model, kind, name))

        obj = mj.mjtObj
        self._cam_id = idx(obj.mjOBJ_CAMERA, "eye")
        self._cam_quat0 = self.model.cam_quat[self._cam_id].copy()
        self._agent_qpos = [int(self.model.jnt_qposadr[idx(obj.mjOBJ_JOINT, n)]) for n in ("agent_x", "agent_y", "agent_yaw")]
        self._agent_qvel = [int(self.model.jnt_dofadr[idx(obj.mjOBJ_JOINT, n)]) for n in ("agent_x", "agent_y", "agent_yaw")]
        self._agent_body = idx(obj.mjOBJ_BODY, "agent")
        self._obj_body = [idx(obj.mjOBJ_BODY, name) for name, _, _ in OBJECTS]
        self._obj_geom = [idx(obj.mjOBJ_GEOM, name) for name, _, _ in OBJECTS]
        self._obj_qpos = [int(self.model.jnt_qposadr[idx(obj.mjOBJ_JOINT, f"{name}_free")]) for name, _, _ in OBJECTS]
        self._obj_qvel = [int(self.model.jnt_dofadr[idx(obj.mjOBJ_JOINT, f"{name}_free")]) for name, _, _ in OBJECTS]
        self._floor_mat = idx(obj.mjOBJ_MATERIAL, "mat_floor")
        self._wall_mat = [idx(obj.mjOBJ_MATERIAL, f"mat_wall_{w}") for w in WALLS]
        self._tex = {
            "checkered": idx(obj.mjOBJ_TEXTURE, "tex_checker"),
            "speckled": idx(obj.mjOBJ_TEXTURE, "tex_speckle"),
            "gradient": idx(obj.mjOBJ_TEXTURE, "tex_gradient"),
            "plain": idx(obj.mjOBJ_TEXTURE, "tex_wall_plain"),
        }
        self._tex_role = int(mj.mjtTextureRole.mjTEXROLE_RGB)
        if self.soft_body:  # each flex vertex is a body with x, y, z slide joints (offsets from its rest position)
            bodies = self.model.flex_vertbodyid
            self._soft_qpos = np.array([[int(self.model.jnt_qposadr[j]) for j in range(self.model.njnt)
                                         if self.model.jnt_bodyid[j] == b] for b in bodies])
            self._soft_bodies = np.asarray(bodies)

        self.layout: dict[str, Any] = {}
        self._yaw = 0.0
        self._pitch = 0.0
        self._steps = 0
        self._target = 0
        self._prev_distance = 0.0
        self._last_frame: np.ndarray | None = None

    # ------------------------------------------------------------------ layout

    def _sample_layout(self) -> dict[str, Any]:
        rng = self.np_random
        L = self.room_half

        def pick(options: Sequence[str], k: int, exclude: Sequence[str] = ()) -> list[str]:
            pool = [c for c in options if c not in exclude]
            return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]

        floor_colour = pick(FLOOR_COLOURS, 1)[0]
        floor_texture = FLOOR_TEXTURES[int(rng.integers(len(FLOOR_TEXTURES)))]
        wall_colours = pick(WALL_COLOURS, 4, exclude=(floor_colour,))
        wall_textures = [WALL_TEXTURES[int(i)] for i in rng.integers(len(WALL_TEXTURES), size=4)]
        object_colours = pick(OBJECT_COLOURS, len(OBJECTS), exclude=(floor_colour,))

        positions: list[np.ndarray] = []
        for _, _, r in OBJECTS:
            margin = r + 0.15
            for _attempt in range(1000):
                p = rng.uniform(-L + margin, L - margin, size=2)
                if all(np.linalg.norm(p - q) >= r + OBJECTS[j][2] + 0.4 for j, q in enumerate(positions)):
                    break
            positions.append(p)
        target = int(rng.integers(len(OBJECTS)))  # drawn even when fixed: the rest of the layout stays the same
        if self.fixed_target is not None:
            target = self.fixed_target
        margin = AGENT_RADIUS + 0.2
        for _attempt in range(1000):
            agent = rng.uniform(-L + margin, L - margin, size=2)
            clear = all(np.linalg.norm(agent - q) >= AGENT_RADIUS + OBJECTS[j][2] + 0.4 for j, q in enumerate(positions))
            if clear and np.linalg.norm(agent - positions[target]) >= max(1.5, self.reach_radius + 0.5):
                break
        heading, speed = rng.uniform(-math.pi, math.pi), rng.uniform(0.0, 0.8)
        ball_velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        layout: dict[str, Any] = {
            "floor_colour": floor_colour,
            "floor_texture": floor_texture,
            "wall_colours": dict(zip(WALLS, wall_colours)),
            "wall_textures": dict(zip(WALLS, wall_textures)),
            "object_colours": object_colours,
            "object_positions": [p.tolist() for p in positions],
            "object_yaws": rng.uniform(-math.pi, math.pi, size=len(OBJECTS)).tolist(),
            "ball_height": float(rng.uniform(0.0, 0.5)),
            "ball_velocity": ball_velocity.tolist(),
            "target": target,
            "agent_position": agent.tolist(),
            "agent_yaw": float(rng.uniform(-math.pi, math.pi)),
        }
        if self.ball_start == "rest":  # the throw is still drawn: a seed's room is the same either way
            layout["ball_height"], layout["ball_velocity"] = 0.0, [0.0, 0.0]
        if self.target_colour is not None:
            _make_colour_unique(layout, self.target_colour)
        if self.start_view_deg is not None:  # drawn after the layout: a seed's room is the same either way
            delta = positions[target] - agent
            offset = math.radians(self.start_view_deg) * float(rng.uniform(-1.0, 1.0))
            layout["agent_yaw"] = math.remainder(math.atan2(delta[1], delta[0]) + offset, 2 * math.pi)
        if self.soft_body:  # drawn after everything else: layouts of the same seed agree with and without it
            r = SOFT_HALF * math.sqrt(2) + SOFT_VERTEX_RADIUS
            for _attempt in range(1000):
                p = rng.uniform(-L + r + 0.15, L - r - 0.15, size=2)
                clear = all(np.linalg.norm(p - q) >= r + OBJECTS[j][2] + 0.3 for j, q in enumerate(positions))
                if clear and np.linalg.norm(p - agent) >= r + AGENT_RADIUS + 0.3:
                    break
            layout["soft_position"] = p.tolist()
            layout["soft_colour"] = pick(OBJECT_COLOURS, 1, exclude=(floor_colour, *object_colours))[0]
        return layout

    def _where(self, xy: Sequence[float], walls: dict[str, str]) -> str:
        L, near = self.room_half, 0.4 * self.room_half
        x, y = xy
        close = [w for w, d in (("north", L - y), ("east", L - x), ("south", L + y), ("west", L + x)) if d < near]
        if len(close) >= 2:
            return f"in the corner of the {walls[close[0]]} and {walls[close[1]]} walls"
        if close:
            return f"near the {walls[close[0]]} wall"
        return "in the middle of the room"

    def _describe(self, layout: dict[str, Any]) -> str:
        walls = layout["wall_colours"]
        texture = "" if layout["floor_texture"] == "plain" else f" {layout['floor_texture']}"
        room = (
            f"a room with {_article(texture.strip() or layout['floor_colour'])}{texture} {layout['floor_colour']} floor, "
            f"{_article(walls['north'])} {walls['north']} north wall, {_article(walls['east'])} {walls['east']} east wall, "
            f"{_article(walls['south'])} {walls['south']} south wall and {_article(walls['west'])} {walls['west']} west wall"
        )
        things = [
            f"{_article(colour)} {colour} {kind} {self._where(xy, walls)}"
            for (_, kind, _), colour, xy in zip(OBJECTS, layout["object_colours"], layout["object_positions"])
        ]
        if "soft_position" in layout:
            things.append(f"{_article(layout['soft_colour'])} {layout['soft_colour']} soft cube "
                          f"{self._where(layout['soft_position'], walls)}")
        return "; ".join([room, *things, f"target: {self._target_name(layout)}"])

    @staticmethod
    def _target_name(layout: dict[str, Any]) -> str:
        i = layout["target"]
        return f"the {layout['object_colours'][i]} {OBJECTS[i][1]}"

    def _apply_layout(self, layout: dict[str, Any]) -> None:
        m, d = self.model, self.data
        m.mat_rgba[self._floor_mat, :3] = COLOURS[layout["floor_colour"]]
        m.mat_texid[self._floor_mat, self._tex_role] = self._tex[layout["floor_texture"]]
        for mat, wall in zip(self._wall_mat, WALLS):
            m.mat_rgba[mat, :3] = COLOURS[layout["wall_colours"][wall]]
            m.mat_texid[mat, self._tex_role] = self._tex[layout["wall_textures"][wall]]
        for i, (_, kind, r) in enumerate(OBJECTS):
            m.geom_rgba[self._obj_geom[i], :3] = COLOURS[layout["object_colours"][i]]
            x, y = layout["object_positions"][i]
            z = r + (layout["ball_height"] if kind == "ball" else 0.0)
            yaw = layout["object_yaws"][i]
            d.qpos[self._obj_qpos[i] : self._obj_qpos[i] + 7] = [x, y, z, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
            if kind == "ball":
                d.qvel[self._obj_qvel[i] : self._obj_qvel[i] + 2] = layout["ball_velocity"]
        ax, ay = layout["agent_position"]
        d.qpos[self._agent_qpos] = [ax, ay, layout["agent_yaw"]]
        if self.soft_body:
            m.flex_rgba[0, :3] = COLOURS[layout["soft_colour"]]
            d.qpos[self._soft_qpos[:, 0]] = layout["soft_position"][0]  # x and y slides; z stays at rest
            d.qpos[self._soft_qpos[:, 1]] = layout["soft_position"][1]

    # ------------------------------------------------------------------ simulation

    def _set_pitch(self, pitch: float) -> None:
        self._pitch = pitch
        half = pitch / 2  # rotation about the camera's own x axis (right): positive looks up
        self.model.cam_quat[self._cam_id] = _quat_mul(self._cam_quat0, np.array([math.cos(half), math.sin(half), 0.0, 0.0]))

    def _action_vector(self, action: Any) -> np.ndarray:
        if self.action_type == "discrete":
            a = np.asarray(action)
            if a.shape not in ((), (1,)) or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a.reshape(-1)[0]) < self.action_space.n:
                raise ValueError(f"action must be an integer in [0, {self.action_space.n}) (a key set of DISCRETE_KEYSETS), got {action!r}")
            return self._keyset_vectors[int(a.reshape(-1)[0])]
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (A.CAMERA_ACTION_DIM,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 4 finite floats [forward, strafe_right, yaw_right, pitch_up] in [-1, 1], got {action!r}")
        return np.clip(a, -1.0, 1.0)

    def _simulate(self, vector: np.ndarray) -> None:
        """Advance physics by one env step with canonical action ``vector`` (no rendering)."""
        mj, m, d = self._mujoco, self.model, self.data
        f, r, yaw_right, pitch_up = (float(v) for v in vector)
        rot = math.radians(self.rotation_speed_deg)
        new_pitch = self._pitch + rot * pitch_up
        if abs(new_pitch) <= math.radians(A.DEFAULT_PITCH_LIMIT_DEG):  # as the DSL: out of range -> no pitch change
            self._set_pitch(new_pitch)
        self._yaw = math.remainder(self._yaw - rot * yaw_right, 2 * math.pi)  # MuJoCo yaw is counter-clockwise
        c, s = math.cos(self._yaw), math.sin(self._yaw)
        speed = self.translation_speed / self.dt
        d.ctrl[0] = speed * (f * c + r * s)  # forward = (c, s), right = (s, -c)
        d.ctrl[1] = speed * (f * s - r * c)
        qy, vy = self._agent_qpos[2], self._agent_qvel[2]
        for _ in range(FRAME_SKIP):
            d.qpos[qy] = self._yaw  # yaw is kinematic: the agent is a cylinder, turning it changes no contact
            d.qvel[vy] = 0.0
            mj.mj_step(m, d)
        d.qpos[qy] = self._yaw
        d.qvel[vy] = 0.0
        mj.mj_kinematics(m, d)  # positions of the new state (mj_step leaves xpos at the start of the step)
        mj.mj_camlight(m, d)

    def _render_frame(self) -> np.ndarray:
        if self._renderer is None:
            H, W = self.image_size
            self._renderer = _OffscreenRenderer(self._mujoco, self.model, self._cam_id, H, W)
        return self._renderer.render(self.model, self.data, self._scene_option)

    def _target_distance(self) -> float:
        d = self.data
        delta = d.xpos[self._obj_body[self._target], :2] - d.xpos[self._agent_body, :2]
        return float(math.hypot(delta[0], delta[1]))

    @property
    def task_spec(self) -> dict[str, Any]:
        """The task's reward in numbers (recorded in datasets by ``collect``; a target-tracking reward model,
        :class:`neuralsim.reward.TargetTracker`, computes the same reward from where it believes the target is):
        ``progress_reward_scale``, ``success_bonus``, ``reach_radius`` (metres), ``contact_distance`` (metres
        between the agent's and the target's centres when they touch: the target is pushed, not passed) and
        ``walkable_half_extent`` (metres: the agent's centre stays within that of the room's centre along both
        horizontal axes, the walls' inner faces less its radius) and ``ball_start`` (so a dataset states how its
        balls started, and resuming one collected under the other start is refused)."""
        # the fixed target's half size; with targets drawn per layout, the smallest (the nearest any can be)
        target = OBJECTS[self.fixed_target][2] if self.fixed_target is not None else min(h for _, _, h in OBJECTS)
        return {"kind": "reach_target", "progress_reward_scale": self.progress_reward_scale,
                "success_bonus": self.success_bonus, "reach_radius": self.reach_radius,
                "contact_distance": round(AGENT_RADIUS + float(target), 6),
                "walkable_half_extent": round(self.room_half - AGENT_RADIUS, 6), "ball_start": self.ball_start}

    @property
    def camera_spec(self) -> dict[str, float]:
        """How one step of the canonical camera action moves the camera (recorded in datasets by ``collect``)."""
        m = self.model
        mass = float(m.body_subtreemass[self._agent_body])
        return {"translation_speed": self.translation_speed, "rotation_speed_deg": self.rotation_speed_deg,
                "fovy_deg": FOVY_DEG,
                # the agent's velocity servo (neuralsim.camera.TranslationResponse): how it ramps up and coasts.
                # Its force limit holds per world axis; a model that does not know the room's heading sees its
                # mean over headings (a motion at angle phi to an axis may accelerate 1 / max(|cos|, |sin|) as
                # fast): 4 / pi * ln(1 + sqrt(2)) = 1.122 times the per-axis limit.
                "velocity_gain": float(m.actuator_gainprm[0, 0]) / mass,
                "acceleration_limit": float(m.actuator_forcerange[0, 1]) / mass * 4 / math.pi * math.log1p(math.sqrt(2)),
                "frame_time": TIMESTEP * FRAME_SKIP, "substeps": FRAME_SKIP}

    def camera_pose(self) -> np.ndarray:
        """``[4, 4]`` float32 camera-to-world of the current frame, OpenCV axes (+X right, +Y down, +Z forward)."""
        xmat = self.data.cam_xmat[self._cam_id].reshape(3, 3)  # columns: camera right, up, backward (MuJoCo)
        pose = np.zeros((4, 4), dtype=np.float64)
        pose[:3, :3] = _MJ_TO_CV @ (xmat * _CAM_TO_CV_COLUMNS)  # columns: right, down, forward
        pose[:3, 3] = _MJ_TO_CV @ self.data.cam_xpos[self._cam_id]
        pose[3, 3] = 1.0
        return pose.astype(np.float32)

    def _info(self, distance: float, success: bool) -> dict[str, Any]:
        pose = self.camera_pose()
        return {
            "description": self.layout["description"],
            "target": self.layout["target_name"],
            "pose": pose,
            "camera": A.pose_to_camera_vector(pose, self.intrinsics),
            "intrinsics": self.intrinsics.copy(),
            "target_distance": distance,
            "target_position": (_MJ_TO_CV @ self.data.xpos[self._obj_body[self._target]]).astype(np.float32),
            "success": success,
        }

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        mj = self._mujoco
        mj.mj_resetData(self.model, self.data)
        layout = self._sample_layout()
        options = dict(options or {})
        if "agent_xy" in options:
            xy = np.asarray(options.pop("agent_xy"), dtype=np.float64)
            limit = self.room_half - AGENT_RADIUS
            if xy.shape != (2,) or not np.all(np.abs(xy) <= limit):
                raise ValueError(f"options['agent_xy'] must be (x, y) metres inside [-{limit}, {limit}]^2, got {xy.tolist()}")
            layout["agent_position"] = xy.tolist()
        if "agent_yaw" in options:
            layout["agent_yaw"] = float(options.pop("agent_yaw"))
        if options:
            raise ValueError(f"options may hold 'agent_xy' and 'agent_yaw', got unknown keys {sorted(options)}")
        layout["description"] = self._describe(layout)
        if self.describe_view:  # the start heading (options["agent_yaw"] included) in words
            layout["description"] += "; " + view_clause(layout)
        layout["target_name"] = self._target_name(layout)
        self.layout = layout
        self._apply_layout(layout)
        self._yaw = float(layout["agent_yaw"])
        self._set_pitch(0.0)
        self._target = int(layout["target"])
        self._steps = 0
        mj.mj_forward(self.model, self.data)
        self._prev_distance = self._target_distance()
        self._last_frame = self._render_frame()
        return self._last_frame, self._info(self._prev_distance, False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._last_frame is None:
            raise RuntimeError("call reset() before step()")
        self._simulate(self._action_vector(action))
        self._steps += 1
        distance = self._target_distance()
        success = self.target_reached()
        reward = self.progress_reward_scale * (self._prev_distance - distance) + (self.success_bonus if success else 0.0)
        self._prev_distance = distance
        terminated = bool(success)
        truncated = bool(self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not terminated)
        self._last_frame = self._render_frame()
        return self._last_frame, float(reward), terminated, truncated, self._info(distance, bool(success))

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn('NeuralSimRoom-v0: render() called without render_mode; use render_mode="rgb_array"')
            return None
        if self._last_frame is None:
            raise RuntimeError("call reset() before render()")
        return self._last_frame.copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ helpers

    def step_keys(self, action: str) -> tuple[np.ndarray, np.ndarray, bool, bool, dict[str, Any]]:
        """Run a key-DSL string (``"w-8,l-4"``), one env step per DSL frame, stopping when the episode ends.

        Returns:
            ``(frames [N, H, W, 3] uint8, rewards [N] float32, terminated, truncated, last info)``.
        """
        per_frame = A.parse_action_string(action)
        frames, rewards = [], []
        terminated = truncated = False
        info: dict[str, Any] = {}
        for keys in per_frame:
            vec = A.keys_to_vector(keys)
            if self.action_type == "discrete":
                step_action: Any = int(A.action_string_to_discrete(f"{''.join(sorted(keys)) or 'none'}-1")[0])
            else:
                step_action = vec
            obs, reward, terminated, truncated, info = self.step(step_action)
            frames.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                break
        return np.stack(frames), np.asarray(rewards, dtype=np.float32), terminated, truncated, info

    def target_reached(self, reach_radius: float | None = None) -> bool:
        """The task's success test at the current state: the target within ``reach_radius`` (default: the env's)
        and, with ``success_pixels``, at least that many of its pixels in the current view (one segmentation render,
        made only within reach). ``step`` ends the episode on it."""
        if self._target_distance() > (self.reach_radius if reach_radius is None else float(reach_radius)):
            return False
        return self.success_pixels is None or self.visible_pixels()[OBJECTS[self._target][0]] >= self.success_pixels

    def object_mask(self, target_only: bool = False) -> np.ndarray:
        """``[H, W]`` bool: the pixels of the current frame that show a task object (the ball, the boxes, the soft
        cube when present; ``target_only``: the task's target alone), from MuJoCo's segmentation render of the same
        camera and state.

        Computed only when called (one extra render; ``step``'s frames and speed are unchanged). Used by
        ``benchmarks/fidelity.py`` to score the objects alone.
        """
        if self._renderer is None or self._last_frame is None:
            raise RuntimeError("call reset() before object_mask()")
        seg = self._renderer.render_segmentation(self.model, self.data, self._scene_option)
        objtype = self._mujoco.mjtObj
        geoms = [self._obj_geom[self._target]] if target_only else self._obj_geom
        mask = (seg[..., 1] == int(objtype.mjOBJ_GEOM)) & np.isin(seg[..., 0], geoms)
        if self.soft_body and not target_only:
            mask |= seg[..., 1] == int(objtype.mjOBJ_FLEX)
        return mask

    def floor_mask(self) -> np.ndarray:
        """``[H, W]`` bool: the pixels of the current frame that show the floor, from MuJoCo's segmentation render of
        the same camera and state (one extra render; ``step``'s frames are unchanged). The labels
        ``examples/finetune_floor.py`` trains the frame memory's floor net on."""
        if self._renderer is None or self._last_frame is None:
            raise RuntimeError("call reset() before floor_mask()")
        seg = self._renderer.render_segmentation(self.model, self.data, self._scene_option)
        mj = self._mujoco
        floor = mj.mj_name2id(self.model, mj.mjtObj.mjOBJ_GEOM, "floor")
        return (seg[..., 1] == int(mj.mjtObj.mjOBJ_GEOM)) & (seg[..., 0] == floor)

    def depth_map(self) -> np.ndarray:
        """``[H, W]`` float32 metres: each pixel's depth along the camera's optical axis in the current frame, from
        MuJoCo's depth buffer of the same camera and state (one extra render; ``step``'s frames are unchanged). The
        ground truth ``benchmarks/memory_warp.py`` scores the frame memory's learned depth against."""
        if self._renderer is None or self._last_frame is None:
            raise RuntimeError("call reset() before depth_map()")
        return self._renderer.render_depth(self.model, self.data, self._scene_option)

    def visible_pixels(self) -> dict[str, int]:
        """Pixels of the current frame per thing: ``"floor"``, each wall by its side (``"north"``, ``"east"``, ``"south"``,
        ``"west"``) and each task object by name (``"ball"``, ``"box0"``, ...), from MuJoCo's segmentation render of the
        same camera and state (one extra render; ``step``'s frames are unchanged). With :attr:`layout` it labels what a
        frame shows (``benchmarks/prompt_fidelity.py``: floor colour, the colour of the wall that fills most of the
        view, the target in view).
        """
        if self._renderer is None or self._last_frame is None:
            raise RuntimeError("call reset() before visible_pixels()")
        seg = self._renderer.render_segmentation(self.model, self.data, self._scene_option)
        mj = self._mujoco
        geoms = seg[..., 0][seg[..., 1] == int(mj.mjtObj.mjOBJ_GEOM)]
        ids, counts = np.unique(geoms, return_counts=True)
        by_id = dict(zip(ids.tolist(), counts.tolist()))
        names = {"floor": "floor", **{wall: f"wall_{wall}" for wall in WALLS}, **{name: name for name, _, _ in OBJECTS}}
        return {key: int(by_id.get(mj.mj_name2id(self.model, mj.mjtObj.mjOBJ_GEOM, geom), 0))
                for key, geom in names.items()}

    @classmethod
    def collection_policies(cls) -> dict[str, type]:
        """The data-collection policies this world offers ``neuralsim collect`` (:data:`neuralsim.hooks.POLICY_HOOK`).

        Returns:
            ``{"explore": RoomExplorePolicy, "scripted": RoomScriptedPolicy, "turn": RoomTurnPolicy, "keys":
            RoomKeysPolicy, "seek": RoomSeekPolicy}`` (:mod:`neuralsim.envs.room_policies`; ``explore``, ``scripted``,
            ``turn`` and ``seek`` steer by :meth:`privileged_state`, ``keys`` holds the walk-and-turn key sets, walls or
            not; ``seek`` heads for the target on those key sets, straying now and then).
        """
        from neuralsim.envs.room_policies import (RoomExplorePolicy, RoomKeysPolicy, RoomScriptedPolicy,
                                                  RoomSeekPolicy, RoomTurnPolicy)

        return {"explore": RoomExplorePolicy, "scripted": RoomScriptedPolicy, "turn": RoomTurnPolicy,
                "keys": RoomKeysPolicy, "seek": RoomSeekPolicy}

    def privileged_state(self) -> dict[str, Any]:
        """Ground truth for scripted/exploring data-collection policies (not an observation).

        Returns:
            ``agent_xy`` (m), ``agent_yaw`` (rad, counter-clockwise from +x, MuJoCo world), ``pitch``
            (rad, up positive), ``objects`` (``[n, 2]`` object centres), ``object_radii``, ``target``
            (index), ``room_half`` (m), ``steps``.
        """
        d = self.data
        return {
            "agent_xy": d.xpos[self._agent_body, :2].copy(),
            "agent_yaw": self._yaw,
            "pitch": self._pitch,
            "objects": d.xpos[self._obj_body, :2].copy(),
            "object_radii": np.array([r for _, _, r in OBJECTS]),
            "target": self._target,
            "room_half": self.room_half,
            "steps": self._steps,
        }
