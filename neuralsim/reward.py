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

import torch
import torch.nn.functional as F
from torch import nn

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
        T = latents.shape[1]
        _, logit, _, progress = self._sequence(latents, actions, None, opens)
        target = rewards.float()
        done = terminated.float()
        # transition j leads to frame j + 1: trained when that frame comes after the one the memory opened at
        keep = torch.ones_like(done) if opens is None else \
            (torch.arange(T - 1, device=done.device)[None] >= opens.to(done.device)[:, None]).float()
        n = keep.sum().clamp_min(1.0)
        mse = ((progress + self.bonus * done - target) ** 2 * keep).sum() / n
        bce = (F.binary_cross_entropy_with_logits(logit, done, weight=1.0 + (TERMINAL_WEIGHT - 1.0) * done,
                                                  reduction="none") * keep).sum() / n
        predicted, kept = logit > 0, keep.bool()
        logs = {"reward_mse": mse.item(), "termination_bce": bce.item(),
                "termination_acc": (predicted.float() == done)[kept].float().mean().item(),
                "termination_recall": (predicted & terminated.bool() & kept).sum().item() / max(1.0, (done * keep).sum().item()),
                "bonus": self.bonus.item()}
        return mse + bce, logs
