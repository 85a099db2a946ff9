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
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from neuralsim.camera import TranslationResponse

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

    def _read(self, memory: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reward, termination logit)``; the reward's bonus part is ``bonus * P(terminated)``."""
        logit = self.termination(memory).squeeze(-1)
        return self._progress(memory, action) + self.bonus * torch.sigmoid(logit), logit

    def _progress(self, memory: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        coef = self.progress(memory)
        return (coef[:, :-1] * action).sum(-1) + coef[:, -1]

    def step(self, prev: torch.Tensor, latent: torch.Tensor, action: torch.Tensor, memory: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One transition. ``prev``, ``latent``: ``[B, C, h, w]``; ``action``: ``[B, A]`` (zeros: none or
        unknown); ``memory``: ``[B, hidden]`` → ``(reward [B], termination logit [B], new memory)``."""
        memory = self.cell(torch.cat([self._features(prev, latent), action.float()], dim=-1), memory.float())
        return (*self._read(memory, action.float()), memory)

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
        return _reward_loss(self, latents, actions, rewards, terminated, opens, self.bonus)


def _reward_loss(model: nn.Module, latents: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                 terminated: torch.Tensor, opens: torch.Tensor | None, bonus: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of :meth:`RewardModel.loss`, for any model with its ``_sequence`` (shared with :class:`TargetTracker`)."""
    T = latents.shape[1]
    _, logit, _, progress = model._sequence(latents, actions, None, opens)
    target = rewards.float()
    done = terminated.float()
    # transition j leads to frame j + 1: trained when that frame comes after the one the memory opened at
    keep = torch.ones_like(done) if opens is None else \
        (torch.arange(T - 1, device=done.device)[None] >= opens.to(done.device)[:, None]).float()
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

TASK_KEYS = ("progress_reward_scale", "success_bonus", "reach_radius", "contact_distance")  # the env's task_spec


class TargetTracker(nn.Module):
    """Reward and termination of a reach-the-target task (the room's: ``scale * (previous distance - distance)`` plus
    ``bonus`` on reaching it) from an estimate of where the target is, in the agent's horizontal frame.

    A dream's frames blur with the horizon, and a model that reads its reward off them (:class:`RewardModel`) pays for
    blur. This one reads the target's position off the frames it is *shown* (an episode's real frames: a reset image,
    the context) and moves that estimate with the camera's own motion, which the world model knows exactly from the
    actions (the same kinematics as its Plücker rays, with the room's velocity servo): a Kalman-style tracker whose
    prediction is the camera and whose measurement is a small localizer. On the frames the dream draws itself it only
    predicts (``dream_trust`` > 0 lets it measure there too). Then

        progress  = scale * (|p before| - |p moved by the camera|)       (the estimate's own jumps pay nothing)
        P(term.)  = sigmoid(end(|p|, direction of p))                  (within reach and in view: learned)
        reward    = progress + bonus * P(term.)

    The target is pushed, not passed: a move that would bring it closer than ``contact_distance`` stops at it.
    Everything is learned from the task's rewards and episode ends alone (no position labels): the progress fixes the
    target's bearing, the turns and the successes its range.

    The target may move on its own (the room's ball rolls for seconds after its drop): the shown frames also
    estimate its motion per step (an alpha-beta filter: a share ``sigmoid(motion_gain)`` of each measurement's
    surprise goes to the motion), and the prediction carries it on.

    Memory ``[B, 6]``: the target's ``(forward, right)`` in metres from the agent, the camera's ``(forward, right)``
    velocity (the servo's state, :func:`neuralsim.camera.translation_response`) and the target's own motion per step
    ``(forward, right)``, all in the agent's frame.

    Args:
        latent_channels, action_dim: as :class:`RewardModel`; the actions must be the canonical camera actions
            ``[forward, strafe_right, yaw_right, pitch_up]``.
        channels: width of the localizer's convolutions.
        task: the env's ``task_spec`` (:data:`TASK_KEYS`).
        translation_speed, rotation_speed_deg: the camera's motion per step at full action.
        response: the camera's velocity servo, or None (the commanded motion is the motion).
        dream_trust: weight of a dreamed frame's measurement relative to a shown frame's (0: the dream only predicts).
    """

    MEMORY = 6

    def __init__(self, latent_channels: int, action_dim: int, channels: int, task: dict, *, translation_speed: float,
                 rotation_speed_deg: float, response: TranslationResponse | None = None, dream_trust: float = 0.0) -> None:
        super().__init__()
        if action_dim != 4:
            raise ValueError(f"a target tracker needs the 4-dim camera actions, got action_dim={action_dim}")
        self.hidden = self.MEMORY
        self.translation_speed, self.rotation = float(translation_speed), math.radians(rotation_speed_deg)
        self.response, self.dream_trust = response, float(dream_trust)
        self.scale, self.bonus_value = float(task["progress_reward_scale"]), float(task["success_bonus"])
        self.reach, self.contact = float(task["reach_radius"]), float(task["contact_distance"])
        # localizer: range (softplus above the contact distance), direction (2, normalised), confidence logit
        self.locate = nn.Sequential(
            nn.Conv2d(latent_channels, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, channels), nn.SiLU(), nn.Linear(channels, 4),
        )
        with torch.no_grad():  # start at "2 m straight ahead, half trusted"
            self.locate[-1].weight.mul_(0.1)
            self.locate[-1].bias.copy_(torch.tensor([1.5, 1.0, 0.0, 0.0]))
        self.motion_gain = nn.Parameter(torch.tensor(-1.0))  # share of a measurement's surprise that is motion
        self.end = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, 1))  # termination from the geometry
        with torch.no_grad():  # start rare: sigmoid(-4)
            self.end[-1].bias.fill_(-4.0)

    @property
    def bonus(self) -> torch.Tensor:  # the interface of RewardModel (fixed here: the task states it)
        return torch.tensor(self.bonus_value)

    def initial_memory(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        memory = torch.zeros(batch_size, self.MEMORY, device=device)
        memory[:, 0] = 2.0
        return memory

    def measure(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, C, h, w]`` → ``(position [N, 2] metres (forward, right), weight [N] in (0, 1))``."""
        out = self.locate(latent.float())
        distance = self.contact + F.softplus(out[:, 0])
        direction = out[:, 1:3] / out[:, 1:3].norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return direction * distance[:, None], torch.sigmoid(out[:, 3])

    def move(self, memory: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The memory after one step of the camera under ``action [B, 4]``: the target seen from the new pose."""
        from neuralsim.camera import translation_response

        p, v, u = memory[:, :2], memory[:, 2:4], memory[:, 4:]
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

        def turned(x: torch.Tensor) -> torch.Tensor:  # a vector of the old frame seen from the new heading
            return torch.stack([x[:, 0] * c + x[:, 1] * s, x[:, 1] * c - x[:, 0] * s], dim=-1)  # turn right: it swings left

        p = turned(p + u) - self.translation_speed * effective[:, :2]  # the target moves, then the agent
        norm = p.norm(dim=-1, keepdim=True)
        p = p * torch.clamp(self.contact / norm.clamp_min(1e-6), min=1.0)  # pushed, not passed
        return torch.cat([p, v, turned(u)], dim=-1)

    def _termination(self, p: torch.Tensor) -> torch.Tensor:
        distance = p.norm(dim=-1, keepdim=True)
        return self.end(torch.cat([distance - self.reach, p / distance.clamp_min(1e-6), distance], dim=-1)).squeeze(-1)

    def _transition(self, memory: torch.Tensor, latent: torch.Tensor | None, action: torch.Tensor, trust: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(progress, termination logit, new memory, moved memory)`` of one step; ``latent`` None: no measurement."""
        moved = self.move(memory, action)
        progress = self.scale * (memory[:, :2].norm(dim=-1) - moved[:, :2].norm(dim=-1))
        new = moved
        if latent is not None and trust > 0:
            seen, weight = self.measure(latent)
            new = self._correct(moved, seen, trust * weight)
        return progress, self._termination(new[:, :2]), new, moved

    def _correct(self, moved: torch.Tensor, seen: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The predicted memory corrected by a measurement ``seen [B, 2]`` trusted ``weight [B]``."""
        surprise = weight[:, None] * (seen - moved[:, :2])
        return torch.cat([moved[:, :2] + surprise, moved[:, 2:4],
                          moved[:, 4:] + torch.sigmoid(self.motion_gain) * surprise], dim=-1)

    def step(self, prev: torch.Tensor, latent: torch.Tensor, action: torch.Tensor, memory: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One dreamed transition (as :meth:`RewardModel.step`): the camera moves the estimate; the dreamed frame
        measures only with ``dream_trust``."""
        progress, logit, memory, _ = self._transition(memory.float(), latent, action.float(), self.dream_trust)
        return progress + self.bonus_value * torch.sigmoid(logit), logit, memory

    def forward(self, latents: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shown frames (as :meth:`RewardModel.forward`): ``latents [B, T, C, h, w]`` measured, ``actions [B, T-1, A]``."""
        rewards, logits, memory, _ = self._sequence(latents, actions, memory)
        return rewards, logits, memory

    def _sequence(self, latents: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor | None,
                  opens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T = latents.shape[:2]
        seen, weight = self.measure(latents.flatten(0, 1))
        seen, weight = seen.view(B, T, 2), weight.view(B, T)
        actions = actions.float()

        def opened(t: int) -> torch.Tensor:  # the estimate a memory opens with at frame t: its measurement, trusted
            return torch.cat([seen[:, t], torch.zeros(B, 4, device=latents.device)], dim=-1)

        first = 1 if memory is not None else 0
        memory = opened(0) if memory is None else memory.float()
        rewards, logits, progress = [], [], []
        for t in range(max(first, 1), T):
            moved = self.move(memory, actions[:, t - 1])
            prog = self.scale * (memory[:, :2].norm(dim=-1) - moved[:, :2].norm(dim=-1))
            memory = self._correct(moved, seen[:, t], weight[:, t])
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

    def loss(self, latents: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
             opens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """As :meth:`RewardModel.loss`: progress MSE (the bonus paid on the real endings) + weighted termination BCE."""
        return _reward_loss(self, latents, actions, rewards, terminated, opens, torch.tensor(self.bonus_value))
