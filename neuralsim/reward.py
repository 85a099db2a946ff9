"""Reward and termination model: a small recurrent network that watches the latent frames of an episode.

The world model's heads (``model.reward_head``) read the dynamics' features, pooled over every token and
trained at random noise levels: they lose where things are, and barely track the room's reward even on
real frames. This model reads the committed latents themselves (what the frame shows and what changed
since the last one, so where the target is and whether the agent closes in on it) and keeps a GRU
memory over the episode, as DIAMOND's reward/termination model does over frames; it runs beside the
dynamics and never decodes a frame (about 1.8 MFLOP per step at the default sizes, 1 % of the dream's step).

    reward   = progress(memory) . [action, 1] + bonus * P(terminated)
    P(term.) = sigmoid(termination(memory))

The progress term is linear in the action with coefficients read from the memory: walking changes the distance to the
target by about ``forward * cos(bearing) + strafe * sin(bearing)``, a product a plain readout would have to learn.

``bonus`` is learned (``neuralsim train reward`` starts a new one at the data's mean extra reward of the steps that end
an episode): the room's reward is a progress term plus a bonus on the step that ends the episode, and this split lets
one sigmoid say both "the episode ends" and "the bonus is paid".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neuralsim.camera import TranslationResponse, translation_response
from neuralsim.config import valid_range_calibration

TERMINAL_WEIGHT = 20.0  # BCE weight of a step that ends an episode (rare) relative to one that does not


class RewardModel(nn.Module):
    """Per-transition reward and termination logit from ``(previous latent, action, latent)`` and a memory.

    Args:
        latent_channels: channels ``C`` of a latent frame ``[C, h, w]``.
        action_dim: width of the canonical action vector.
        channels: width of the convolutions over a latent frame (the model's size knob).
        hidden: size of the GRU memory.
    """

    def __init__(self, latent_channels: int, action_dim: int, channels: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.hidden = hidden
        # The frame and its change since the last one, side by side: the change says whether the agent moved toward
        # what it sees. Two stride-2 convolutions take an 8x8 latent to 2x2; the flatten keeps where things are.
        # (~0.9 M multiply-adds per step with the GRU at the default sizes: 1 % of the dream's step.)
        self.frame = nn.Sequential(
            nn.Conv2d(2 * latent_channels, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, hidden), nn.SiLU(),
        )
        self.cell = nn.GRUCell(hidden + action_dim, hidden)
        self.progress = nn.Linear(hidden, action_dim + 1)  # a coefficient per action component, and a constant
        self.termination = nn.Linear(hidden, 1)
        self.bonus = nn.Parameter(torch.zeros(()))

    def initial_memory(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden, device=device)

    def _features(self, prev: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``[N, C, h, w]`` twice → ``[N, hidden]``."""
        return self.frame(torch.cat([latent, latent - prev], dim=1).float())

    def _progress(self, memory: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        coef = self.progress(memory)
        return (coef[:, :-1] * action).sum(-1) + coef[:, -1]

    def step(self, prev: torch.Tensor, latent: torch.Tensor, action: torch.Tensor, memory: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One transition. ``prev``, ``latent``: ``[B, C, h, w]``; ``action``: ``[B, A]`` (zeros: none or
        unknown); ``memory``: ``[B, hidden]`` → ``(reward [B], termination logit [B], new memory)``.

        The bonus is paid on the step the dream ends (logit > 0, the envs' termination rule), as
        :meth:`TargetTracker.step` pays it: ``bonus * P`` on every step would pay a policy that hovers where P is just
        under 0.5 part of the bonus on every step, without end. (:meth:`forward`, which training reads, keeps the soft
        ``bonus * P``.)"""
        memory = self.cell(torch.cat([self._features(prev, latent), action.float()], dim=-1), memory.float())
        logit = self.termination(memory).squeeze(-1)
        progress = self._progress(memory, action.float())
        return progress + self.bonus * (logit > 0).to(progress.dtype), logit, memory

    def forward(self, latents: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sequence: ``latents [B, T, C, h, w]``, ``actions [B, T-1, A]`` (action ``i`` leads from frame ``i`` to
        ``i+1``). Without ``memory`` the first frame opens it (a transition from itself under no action).

        Returns ``(rewards [B, T-1], termination logits [B, T-1], memory after the last frame)``."""
        rewards, logits, memory, _ = self._sequence(latents, actions, memory)
        return rewards, logits, memory

    def _sequence(self, latents: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor | None,
                  opens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus the progress part of every reward ``[B, T-1]`` (for the loss). ``opens [B]``: the
        frame at which each row's memory opens (it restarts there; the outputs before it are not meaningful)."""
        B, T = latents.shape[:2]
        prev = torch.cat([latents[:, :1], latents[:, :-1]], dim=1)  # frame 0 follows itself
        feats = self._features(prev.flatten(0, 1), latents.flatten(0, 1)).view(B, T, -1)  # all frames at once
        moves = torch.cat([actions.new_zeros(B, 1, actions.shape[-1]), actions], dim=1).float()
        if memory is None:
            memory = self.initial_memory(B, latents.device)
            first = 0
        else:  # the memory has seen frame 0 already
            first = 1
        rewards, logits, progress = [], [], []
        initial = self.initial_memory(B, latents.device)
        for t in range(first, T):
            if opens is not None:
                memory = torch.where((opens == t)[:, None], initial, memory)
            memory = self.cell(torch.cat([feats[:, t], moves[:, t]], dim=-1), memory)
            if t > 0:
                logit = self.termination(memory).squeeze(-1)
                progress.append(self._progress(memory, moves[:, t]))
                rewards.append(progress[-1] + self.bonus * torch.sigmoid(logit))
                logits.append(logit)
        if not rewards:
            empty = latents.new_zeros(B, 0)
            return empty, empty, memory, empty
        return torch.stack(rewards, 1), torch.stack(logits, 1), memory, torch.stack(progress, 1)

    def loss(self, latents: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
             opens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Reward MSE + termination BCE over every transition of the windows (``rewards``, ``terminated``:
        ``[B, T-1]``) that leads to a frame after the one at which each row's memory opens (``opens [B]``, default
        0). Returns ``(loss, logs)``.

        Why a memory opens at a random frame of the window: an episode's ending is its last step, so a window that
        holds one ends there, and a memory that always opened at the window's first frame met every success at the
        same age (the window's length): it learned that age instead of the frame (measured: on held-out episodes it
        gave the successes probability 0 and fired at step 32 of long episodes).

        The MSE pays the bonus on the steps that really ended an episode (``progress + bonus * terminated``): through
        ``P(terminated)``, rare and near 0 early on, the bonus would get almost no gradient and stay at 0, and every
        missed bonus is a 10-point error. The BCE weighs an ending step ``TERMINAL_WEIGHT`` times (about 1 step in 300
        ends an episode in the room's data)."""
        _, logit, _, progress = self._sequence(latents, actions, None, opens)
        return _reward_loss(logit, progress, rewards, terminated, opens, self.bonus)


def _reward_loss(logit: torch.Tensor, progress: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
                 opens: torch.Tensor | None, bonus: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of :meth:`RewardModel.loss` from a ``_sequence``'s termination logits and progress ``[B, T-1]``
    (shared with :class:`TargetTracker`)."""
    target = rewards.float()
    done = terminated.float()
    # transition j leads to frame j + 1: trained when that frame comes after the one the memory opened at
    keep = torch.ones_like(done) if opens is None else \
        (torch.arange(logit.shape[1], device=done.device)[None] >= opens.to(done.device)[:, None]).float()
    n = keep.sum().clamp_min(1.0)
    mse = ((progress + bonus * done - target) ** 2 * keep).sum() / n
    bce = (F.binary_cross_entropy_with_logits(logit, done, weight=1.0 + (TERMINAL_WEIGHT - 1.0) * done,
                                              reduction="none") * keep).sum() / n
    predicted, kept = logit > 0, keep.bool()
    logs = {"reward_mse": mse.item(), "termination_bce": bce.item(),
            "termination_acc": (predicted.float() == done)[kept].float().mean().item(),
            "termination_recall": (predicted & terminated.bool() & kept).sum().item() / max(1.0, (done * keep).sum().item()),
            "bonus": bonus.item()}
    return mse + bce, logs


# ---------------------------------------------------------------------------------------------
# Target tracker: the reward of a reach-the-target task from where the target is
# ---------------------------------------------------------------------------------------------

class TargetTracker(nn.Module):
    """Reward and termination of a reach-the-target task (the room's: ``scale * (previous distance - distance)`` plus
    ``bonus`` on reaching it) from an estimate of where the target is, in the agent's horizontal frame.

    A dream's frames blur with the horizon, and a model that reads its reward off them (:class:`RewardModel`) pays for
    blur. This one reads the target's position off the frames it is *shown* (an episode's real frames: a reset image,
    the context) and moves that estimate with the camera's own motion, which the world model knows exactly from the
    actions (the same kinematics as its Plücker rays, with the room's velocity servo): a Kalman-style tracker whose
    prediction is the camera and whose measurement is a small localizer. On the frames the dream draws itself it only
    predicts (``dream_trust`` > 0 lets it measure there too: over 16 dreamed steps that tracks the room's reward
    better; such a correction pays its change of distance, so a blurred target measured ahead again and again cannot
    pay the same approach twice). Then

        progress  = scale * (|p before| - |p moved by the camera|)       (a shown frame's correction pays nothing;
                                                                          a dreamed frame's pays: see ``step``)
        P(term.)  = sigmoid(sharpness * min(reach - |p|, forward - near, forward * tan(fov / 2) - |right|))
        reward    = progress + bonus * P(term.)                  (in a dream, :meth:`step`: the bonus only on the
                                                                  step that ends it, P > 0.5)

    The target is pushed, not passed: a move that would bring it closer than ``contact_distance`` stops at it.
    The localizer learns where the target is from the data's recorded positions (``target_positions`` with the camera
    ``poses``: :func:`target_offsets`; its confidence from whether the target is in view), the rest end to end from
    the task's rewards and episode ends (progress MSE, termination BCE, through the prediction steps). The rewards
    alone were measured too weak a teacher: from "straight ahead" the progress does not change with the bearing.

    The target is taken to stay where it is (the room's ball rolls on after its drop, about 0.02 m per step: an
    alpha-beta estimate of that motion from the shown frames was tried and absorbed the localizer's bias instead:
    as the agent closes in, its range estimates shrink less than the distance does, which read as a target moving
    away and cancelled the dream's progress).

    Success is geometric: within ``reach_radius`` and in view (ahead by more than a learned ``near`` distance, inside
    the horizontal field of view), each edge a logistic of learned sharpness.

    Walls: with ``walkable_half_extent`` in the task (the room states it: a square room's half size less the agent's
    radius), the agent cannot leave that square, as in the room, where the walls stop it. Without them a dream paid a
    walk past the target all the way to 16 m behind it (−140 where the room, whose wall stops the walk, pays −20): with
    the true start offsets and the real actions, the tracker's return of walking forward was −39 against the room's
    +16, and +16 with the walls (30 held-out seeds). A second head reads the agent's place in the room off a frame:
    ``(x, z)`` from the room's centre and the heading, known only up to the square's quarter turns (the four walls
    look alike but for colours drawn per room), so it learns the nearest of the four and a shown frame's reading is
    turned to the memory's before it corrects it.

    Memory ``[B, 4]`` (``[B, 8]`` with walls): the target's ``(forward, right)`` in metres from the agent, the camera's
    ``(forward, right)`` velocity (the servo's state, :func:`neuralsim.camera.translation_response`), in the agent's
    frame; with walls, then the agent's ``(x, z)`` in the room and its heading ``(x, z)``, a unit vector.

    Args:
        latent_channels, action_dim: as :class:`RewardModel`; the actions must be the canonical camera actions
            ``[forward, strafe_right, yaw_right, pitch_up]``.
        channels: width of the localizer's convolutions; latent_size: ``(h, w)`` of a latent frame.
        task: the env's ``task_spec`` (:data:`neuralsim.config.REWARD_TASK_KEYS`).
        translation_speed, rotation_speed_deg: the camera's motion per step at full action.
        response: the camera's velocity servo, or None (the commanded motion is the motion).
        dream_trust: weight of a dreamed frame's measurement relative to a shown frame's (0: the dream only predicts).
        view_tan: tangent of half the horizontal field of view (what "in view" means for the localizer's labels).
    """

    #: a shown frame's room reading corrects the memory's by this fraction (the reading has no confidence of its own)
    ROOM_GAIN = 0.5

    def __init__(self, latent_channels: int, action_dim: int, channels: int, task: dict, *,
                 latent_size: tuple[int, int] = (8, 8), translation_speed: float,
                 rotation_speed_deg: float, response: TranslationResponse | None = None, dream_trust: float = 0.0,
                 view_tan: float = math.tan(math.radians(35.0)),
                 range_calibration: list[list[float]] | None = None) -> None:
        super().__init__()
        if action_dim != 4:
            raise ValueError(f"a target tracker needs the 4-dim camera actions, got action_dim={action_dim}")
        self.translation_speed, self.rotation = float(translation_speed), math.radians(rotation_speed_deg)
        self.response, self.dream_trust, self.view_tan = response, float(dream_trust), float(view_tan)
        self.scale, self.bonus_value = float(task["progress_reward_scale"]), float(task["success_bonus"])
        self.reach, self.contact = float(task["reach_radius"]), float(task["contact_distance"])
        # localizer: a heatmap over the latent grid's cells (where the target is), each cell a learned place on the
        # floor (where a thing seen there usually is: the image position's geometry) plus a correction; the soft-argmax
        # of the heatmap is the measurement, its log-sum-exp the confidence (a strided CNN with a flat readout lost
        # where a few-pixel ball is: the first version, which located it worse on the room's data).
        h, w = latent_size
        self.locate = nn.Sequential(
            nn.Conv2d(latent_channels, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), nn.Conv2d(channels, 3, 1),
        )
        self.place = nn.Parameter(torch.stack([torch.full((h, w), 2.0), torch.zeros(h, w)]))  # (forward, right) per cell
        self.confidence_bias = nn.Parameter(torch.tensor(math.log(h * w)))
        # the localizer's range mapped through knots fitted on held-out episodes (fit_range_calibration), at inference
        # only; plain numbers from the config, not weights, so a checkpoint's weights are the same with or without it
        if range_calibration is not None and not valid_range_calibration(range_calibration):
            raise ValueError(f"range_calibration must be None or >= 2 [range, factor] knots, ranges increasing, factors "
                             f"> 0, got {range_calibration!r}")
        self.range_calibration = [tuple(float(x) for x in k) for k in range_calibration or []]
        # success: within reach and in view; where "in view" starts (a floor object leaves the bottom of the view when
        # near) and how sharp the edges are, learned
        self.near = nn.Parameter(torch.tensor(0.5))
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(20.0)))
        # walls: the agent's place in a square room (x, z, heading x, heading z), read off the whole frame
        self.walls = float(task.get("walkable_half_extent") or 0.0)
        self.memory_size = 8 if self.walls else 4
        if self.walls:
            self.locate_room = nn.Sequential(
                nn.Conv2d(latent_channels, channels, 3, padding=1), nn.SiLU(),
                nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(), nn.Flatten(),
                nn.Linear(channels * ((h + 1) // 2) * ((w + 1) // 2), 128), nn.SiLU(), nn.Linear(128, 4),
            )

    @property
    def bonus(self) -> torch.Tensor:  # the interface of RewardModel (fixed here: the task states it)
        return torch.tensor(self.bonus_value)

    def initial_memory(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        """``[B, 4]`` (``[B, 8]`` with walls): 2 m straight ahead, at rest, in the room's centre facing +x (a memory
        opens with its first frame's measurement instead)."""
        memory = torch.zeros(batch_size, self.memory_size, device=device)
        memory[:, 0] = 2.0
        if self.walls:
            memory[:, 6] = 1.0
        return memory

    def measure(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, C, h, w]`` → ``(position [N, 2] metres (forward, right), weight [N] in (0, 1))``."""
        out = self.locate(latent.float())
        heat = out[:, 0].flatten(1)
        places = (self.place[None] + out[:, 1:]).flatten(2)  # (N, 2, cells)
        position = (places * heat.softmax(-1)[:, None]).sum(-1)
        if self.range_calibration and not self.training:
            position = position * self.range_factor(position.norm(dim=-1))[:, None]
        distance = position.norm(dim=-1, keepdim=True)
        position = position * torch.clamp(self.contact / distance.clamp_min(1e-6), min=1.0)
        return position, torch.sigmoid(torch.logsumexp(heat, -1) - self.confidence_bias)

    def range_factor(self, measured: torch.Tensor) -> torch.Tensor:
        """The calibration's factor (true range / measured) at measured ranges ``[N]``: linear between its knots,
        the end knots' beyond them; 1 without a calibration."""
        if not self.range_calibration:
            return torch.ones_like(measured)
        xs, ys = torch.tensor(self.range_calibration, dtype=measured.dtype, device=measured.device).T.contiguous()
        r = measured.clamp(xs[0], xs[-1]).contiguous()
        i = torch.searchsorted(xs, r).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (r - x0) / (x1 - x0)

    def measure_room(self, latent: torch.Tensor) -> torch.Tensor:
        """``[N, C, h, w]`` → the agent's place in the room ``[N, 4]``: ``(x, z)`` metres and a unit heading, one of the
        square's four equivalent readings (needs walls)."""
        out = self.locate_room(latent.float())
        return torch.cat([out[:, :2], F.normalize(out[:, 2:], dim=-1)], dim=-1)

    def move(self, memory: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The memory after one step of the camera under ``action [B, 4]``: the target seen from the new pose (with
        walls, the step stopped where the walkable square ends, and the servo's velocity into the wall zeroed)."""
        p, v = memory[:, :2], memory[:, 2:4]
        action = action.detach()
        if self.response is not None:
            effective, v = translation_response(v.detach().double(), action.double(), self.response,
                                                translation_speed=self.translation_speed,
                                                rotation_speed_deg=math.degrees(self.rotation))
            effective, v = effective.to(p.dtype), v.to(p.dtype)
        else:
            effective = action
        theta = self.rotation * action[:, 2]
        c, s = theta.cos(), theta.sin()
        p = torch.stack([p[:, 0] * c + p[:, 1] * s, p[:, 1] * c - p[:, 0] * s], dim=-1)  # turn right: it swings left
        step = self.translation_speed * effective[:, :2]  # (forward, right) in the turned frame
        room = []
        if self.walls:
            place, heading = memory[:, 4:6], memory[:, 6:8]
            right = torch.stack([heading[:, 1], -heading[:, 0]], dim=-1)  # the camera's right (OpenCV axes, +y down)
            heading = c[:, None] * heading + s[:, None] * right
            right = torch.stack([heading[:, 1], -heading[:, 0]], dim=-1)
            wanted = place + step[:, :1] * heading + step[:, 1:] * right
            reached = wanted.clamp(-self.walls, self.walls)
            moved = reached - place
            step = torch.stack([(moved * heading).sum(-1), (moved * right).sum(-1)], dim=-1)
            if self.response is not None:  # the wall stops the servo's motion into it
                velocity = v[:, :1] * heading + v[:, 1:] * right
                velocity = torch.where(wanted != reached, torch.zeros_like(velocity), velocity)
                v = torch.stack([(velocity * heading).sum(-1), (velocity * right).sum(-1)], dim=-1)
            room = [reached, heading]
        p = p - step
        norm = p.norm(dim=-1, keepdim=True)
        p = p * torch.clamp(self.contact / norm.clamp_min(1e-6), min=1.0)  # pushed, not passed
        return torch.cat([p, v, *room], dim=-1)

    def _termination(self, p: torch.Tensor) -> torch.Tensor:
        forward, right = p[:, 0], p[:, 1]
        margin = torch.minimum(torch.minimum(self.reach - p.norm(dim=-1), forward - self.near),
                               forward * self.view_tan - right.abs())
        return self.log_sharpness.exp() * margin

    def _advance(self, memory: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(progress [B], moved memory)``: the camera's step and the distance it closed (a measurement's jump pays
        nothing)."""
        moved = self.move(memory, action)
        return self.scale * (memory[:, :2].norm(dim=-1) - moved[:, :2].norm(dim=-1)), moved

    def _correct(self, moved: torch.Tensor, seen: torch.Tensor, weight: torch.Tensor,
                 room: torch.Tensor | None = None, room_weight: float | torch.Tensor = 0.0) -> torch.Tensor:
        """The predicted memory corrected by a measurement ``seen [B, 2]`` trusted ``weight [B]`` (with walls, and the
        room reading ``room [B, 4]`` turned to the memory's quarter, by ``room_weight``)."""
        target = moved[:, :2] + weight[:, None] * (seen - moved[:, :2])
        if room is None:
            return torch.cat([target, moved[:, 2:]], dim=-1)
        room = nearest_quarter(room, moved[:, 4:8])
        room = moved[:, 4:8] + room_weight * (room - moved[:, 4:8])
        room = torch.cat([room[:, :2], F.normalize(room[:, 2:], dim=-1)], dim=-1)
        return torch.cat([target, moved[:, 2:4], room], dim=-1)

    def step(self, prev: torch.Tensor, latent: torch.Tensor, action: torch.Tensor, memory: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One dreamed transition (as :meth:`RewardModel.step`): the camera moves the estimate; the dreamed frame
        measures only with ``dream_trust``."""
        before = memory.float()
        progress, memory = self._advance(before, action.float())
        if self.dream_trust > 0:
            seen, weight = self.measure(latent)
            room = self.measure_room(latent) if self.walls else None
            memory = self._correct(memory, seen, self.dream_trust * weight, room, self.dream_trust * self.ROOM_GAIN)
            # A dreamed frame's correction pays its change of distance too, so a dream's progress telescopes to
            # scale * (first distance - last): when only the camera's motion paid, a blurred target measured ahead
            # again on every frame paid the same approach over and over, and PPO farmed it (README, "reward
            # prediction").
            progress = self.scale * (before[:, :2].norm(dim=-1) - memory[:, :2].norm(dim=-1))
        logit = self._termination(memory[:, :2])
        # The bonus is paid on the step the dream ends (P > 0.5, the envs' termination rule), as the room pays it on
        # the step that ends its episode: bonus * P on every step would pay a policy that hovers just outside the
        # reach band (P just under 0.5) a fraction of the bonus on every step, without end. (Training reads the soft
        # bonus * P of `_sequence`, which the MSE needs.)
        return progress + self.bonus_value * (logit > 0).to(progress.dtype), logit, memory

    def forward(self, latents: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shown frames (as :meth:`RewardModel.forward`): ``latents [B, T, C, h, w]`` measured, ``actions [B, T-1, A]``."""
        rewards, logits, memory, _ = self._sequence(latents, actions, memory)
        return rewards, logits, memory

    def _sequence(self, latents: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor | None,
                  opens: torch.Tensor | None = None, measured: tuple[torch.Tensor, ...] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`RewardModel._sequence`; ``measured``: :meth:`measure` of ``latents.flatten(0, 1)`` and, with walls,
        :meth:`measure_room` of them, if the caller has them already (the loss reuses them for the heads' own terms)."""
        B, T = latents.shape[:2]
        seen, weight = self.measure(latents.flatten(0, 1)) if measured is None else measured[:2]
        seen, weight = seen.view(B, T, 2), weight.view(B, T)
        room = None
        if self.walls:
            room = self.measure_room(latents.flatten(0, 1)) if measured is None else measured[2]
            room = room.view(B, T, 4)
        actions = actions.float()

        def opened(t: int) -> torch.Tensor:  # the estimate a memory opens with at frame t: its measurement, trusted
            parts = [seen[:, t], torch.zeros(B, 2, device=latents.device)]
            return torch.cat(parts + ([room[:, t]] if room is not None else []), dim=-1)

        first = 1 if memory is not None else 0
        memory = opened(0) if memory is None else memory.float()
        rewards, logits, progress = [], [], []
        for t in range(max(first, 1), T):
            prog, moved = self._advance(memory, actions[:, t - 1])
            memory = self._correct(moved, seen[:, t], weight[:, t], None if room is None else room[:, t], self.ROOM_GAIN)
            if opens is not None:
                memory = torch.where((opens == t)[:, None], opened(t), memory)
            logit = self._termination(memory[:, :2])
            progress.append(prog)
            logits.append(logit)
            rewards.append(prog + self.bonus_value * torch.sigmoid(logit))
        if not rewards:
            empty = latents.new_zeros(B, 0)
            return empty, empty, memory, empty
        return torch.stack(rewards, 1), torch.stack(logits, 1), memory, torch.stack(progress, 1)

    def in_view(self, offsets: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` target offsets (forward, right) → bool: in the camera's view, near enough to be seen (its
        centre within the horizontal field of view, 0.45–6 m ahead: nearer, a floor object leaves the bottom)."""
        forward, right = offsets[..., 0], offsets[..., 1]
        return (forward > 0.45) & (forward < 6.0) & (right.abs() < forward * self.view_tan)

    def loss(self, latents: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
             opens: torch.Tensor | None = None, offsets: torch.Tensor | None = None, places: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """As :meth:`RewardModel.loss` (progress MSE with the bonus paid on the real endings, weighted termination
        BCE), plus with ``offsets [B, T, 2]`` (the target's true (forward, right) per frame, :func:`target_offsets`)
        the localizer's: Huber on the position where the target is in view, BCE of the confidence against in view;
        with walls and ``places [B, T, 4]`` (the agent's true place in the room, :func:`room_places`), the room
        head's: Huber to the nearest of the place's four quarter-turned equivalents."""
        seen, weight = self.measure(latents.flatten(0, 1))
        room = self.measure_room(latents.flatten(0, 1)) if self.walls else None
        _, logit, _, progress = self._sequence(latents, actions, None, opens, measured=(seen, weight, room))
        loss, logs = _reward_loss(logit, progress, rewards, terminated, opens, torch.tensor(self.bonus_value))
        if room is not None and places is not None:
            truth = nearest_quarter(places.reshape(-1, 4).to(room), room.detach())
            loss = loss + F.smooth_l1_loss(room, truth, reduction="none").sum(-1).mean()
            logs.update(room_error_m=(room[:, :2] - truth[:, :2]).norm(dim=-1).mean().item(),
                        room_heading_error_deg=math.degrees(torch.acos((room[:, 2:] * truth[:, 2:]).sum(-1)
                                                                       .clamp(-1, 1)).mean().item()))
        if offsets is None:
            return loss, logs
        offsets = offsets.reshape(-1, 2).to(seen)
        visible = self.in_view(offsets)
        where = (F.smooth_l1_loss(seen, offsets, reduction="none").sum(-1) * visible).sum() / visible.sum().clamp_min(1)
        sure = F.binary_cross_entropy(weight.clamp(1e-6, 1 - 1e-6), visible.float())
        error = (seen - offsets).norm(dim=-1)[visible]
        logs.update(locate_loss=where.item(), confidence_bce=sure.item(),
                    locate_error_m=error.mean().item() if len(error) else float("nan"))
        return loss + where + sure, logs


class TerminationDetector(nn.Module):
    """Whether a decoded frame ends the episode (the room's: shows its success): a small CNN over an rgb frame, one logit.

    A reward model that estimates where the target is and moves that estimate with the camera (the tracker above)
    times a success by geometry: a range biased by a few tenths of a metre near the target fires two or three steps
    late, and a success the room also judges by what the frame shows (the room's: within reach *and* enough of the
    target in view) it cannot see at all. The dream's decoded frames show it: the frame memory warps the real
    target's pixels with the camera, so an approached target grows as it does in the room. This net reads those frames
    and says "this frame ends the episode". It learns from the model's own dreams of real episodes' actions, labelled
    with the real endings, and from the real frames (`neuralsim train termination`), so it learns what a success looks
    like *as the dream draws it*. Four stride-2 convolutions, then a linear readout of the whole grid (where the
    target sits in the frame matters: a near target sits low).

    Args:
        channels: width of the first two convolutions (the last two have twice as many).
        image_size: ``(H, W)`` of the frames (each a multiple of 16).
    """

    OUTPUT_BIAS = "net.11.bias"  # the logit's bias (`train termination` shifts it to its fitted threshold)

    def __init__(self, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        H, W = (int(s) for s in image_size)
        if H % 16 or W % 16:
            raise ValueError(f"a termination detector needs an image size that is a multiple of 16, got {image_size}")
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(c, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1),
            nn.SiLU(), nn.Flatten(), nn.Linear(2 * c * (H // 16) * (W // 16), 64), nn.SiLU(), nn.Linear(64, 1),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [N, H, W, 3]`` uint8 (or floats in [0, 255]) → logits ``[N]`` (> 0: the frame ends the episode)."""
        first = next(self.parameters())
        x = frames.to(first.device, first.dtype).permute(0, 3, 1, 2).div(127.5).sub(1.0)
        return self.net(x.contiguous())[:, 0]

    def loss(self, frames: torch.Tensor, labels: torch.Tensor, pos_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """Binary cross-entropy of ``frames [N, H, W, 3]`` against ``labels [N]`` (True: the frame ends the episode),
        the positives weighted by ``pos_weight``."""
        logits = self(frames).float()
        labels = labels.to(logits.device, logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=logits.new_tensor(pos_weight))
        fired, truth = logits > 0, labels > 0.5
        return loss, {"loss": loss.item(), "fired": fired.float().mean().item(),
                      "recall": (fired & truth).sum().item() / max(truth.sum().item(), 1),
                      "precision": (fired & truth).sum().item() / max(fired.sum().item(), 1)}


def quarter_turns(place: torch.Tensor) -> torch.Tensor:
    """A room place ``[..., 4]`` (x, z, heading x, heading z) → ``[..., 4 turns, 4]``: the same place seen from the
    square room turned by 0, 90, 180, 270 degrees about its centre (indistinguishable but for the walls' colours)."""
    out = [place]
    for _ in range(3):
        p = out[-1]
        out.append(torch.stack([p[..., 1], -p[..., 0], p[..., 3], -p[..., 2]], dim=-1))
    return torch.stack(out, dim=-2)


def nearest_quarter(place: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``place [N, 4]`` turned by the quarter turn that brings it nearest ``reference [N, 4]``."""
    turns = quarter_turns(place)
    index = (turns - reference[:, None]).square().sum(-1).argmin(-1)
    return turns[torch.arange(len(place), device=place.device), index]


def room_places(poses: torch.Tensor) -> torch.Tensor:
    """The agent's place in the room: ``poses [..., 4, 4]`` camera-to-world (OpenCV axes, the room's centre at the
    origin) → ``[..., 4]`` ``(x, z)`` metres and the heading ``(x, z)`` (unit, pitch flattened)."""
    R, position = poses[..., :3, :3].float(), poses[..., :3, 3].float()
    heading = F.normalize(torch.stack([R[..., 0, 2], R[..., 2, 2]], dim=-1), dim=-1)
    return torch.cat([torch.stack([position[..., 0], position[..., 2]], dim=-1), heading], dim=-1)


def target_offsets(poses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Where a target is from the camera, in the camera's horizontal frame: ``poses [..., 4, 4]`` camera-to-world
    (OpenCV axes: +Y down) and ``targets [..., 3]`` world positions → ``[..., 2]`` ``(forward, right)`` metres."""
    R, position = poses[..., :3, :3].float(), poses[..., :3, 3].float()
    ground = torch.tensor([1.0, 0.0, 1.0], device=poses.device)
    forward, right = R[..., :, 2] * ground, R[..., :, 0] * ground  # pitch tilts the forward axis: flatten it
    forward = forward / forward.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    right = right / right.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    rel = targets.float() - position
    return torch.stack([(rel * forward).sum(-1), (rel * right).sum(-1)], dim=-1)


#: Bins of measured range (metres) over which :func:`fit_range_calibration` takes its medians.
CALIBRATION_EDGES = (0.3, 0.7, 0.9, 1.05, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0)


def fit_range_calibration(measured: torch.Tensor, weight: torch.Tensor, truth: torch.Tensor, *,
                          min_range: float = 0.0, min_weight: float = 0.5, min_count: int = 20,
                          edges: tuple[float, ...] = CALIBRATION_EDGES) -> list[list[float]]:
    """Knots of a tracker's range calibration from held-out frames: the localizer's readings ``measured [N, 2]``
    (forward, right; :meth:`TargetTracker.measure` uncalibrated), their confidence ``weight [N]`` and the target's true
    offsets ``truth [N, 2]`` (:func:`target_offsets`). Over the confident readings (``weight > min_weight``), per bin of
    measured range from ``min_range`` on with at least ``min_count`` of them: ``[median measured range, median true /
    measured range]``. A tracker passes its reach radius as ``min_range``: within it, its success geometry (``near``,
    the edges' sharpness) was learned on the readings as they are, and calibrating them there lost successes on real
    frames (F1 0.68 -> 0.48 on the benchmark's protocol, README "reward prediction").

    Why: a localizer regresses toward the ranges it saw most, and reads far from the views its training policy rarely
    showed (a target near, ahead): a dream that starts 20 % long reaches the success radius steps after the room does
    (README, "reward prediction"). The factor maps a reading to what such readings mean on frames it never trained on.

    Raises:
        ValueError: fewer than two bins hold ``min_count`` confident readings (too few frames, or none with the target
            in view).
    """
    r = measured.double().norm(dim=-1)
    t = truth.double().norm(dim=-1)
    sure = (weight.double() > min_weight) & (r > 1e-6)
    edges = tuple(sorted({float(min_range), *(e for e in edges if e > min_range)}))
    knots = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = sure & (r >= lo) & (r < hi)
        if int(inside.sum()) >= min_count:
            knots.append([round(float(r[inside].median()), 4), round(float((t[inside] / r[inside]).median()), 4)])
    if len(knots) < 2:
        raise ValueError(f"a range calibration needs >= {min_count} confident readings in at least two range bins, got "
                         f"{len(knots)} such bins from {int(sure.sum())} confident of {len(r)} frames")
    return knots
