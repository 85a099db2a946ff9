"""Self-forcing: training on the model's own rollouts (WorldModel.dynamics_loss own_frames, train --self-forcing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, model_weights, train_config
from neuralsim.train import StageLoss, StopTraining, TrainingError, train


def test_init_state_from_latents_equals_from_frames(make_model):
    model = make_model
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    actions = np.zeros((2, 1, 4), np.float32)  # tiny: 2 frames per latent -> 2 latent frames
    a = model.init_state(2, frames=frames, actions=actions, generator=torch.Generator().manual_seed(0))
    b = model.init_state(2, latents=model.encode(frames), actions=actions, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.latent, b.latent)
    torch.testing.assert_close(a.reward, b.reward)
    with pytest.raises(ValueError, match="frames or as latents, not both"):
        model.init_state(2, frames=frames, latents=model.encode(frames))
    with pytest.raises(ValueError, match=r"latents must be a float tensor \[B, T, "):
        model.init_state(2, latents=torch.zeros(2, 3, 1, 1))


@pytest.fixture
def make_model():
    return make_tiny_model()


def test_own_frames_loss_masks_the_own_history(make_model):
    model = make_model
    torch.manual_seed(0)
    with torch.no_grad():  # an untrained model's zero-initialised output layers would hide any dependence
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    latents = torch.randn(2, 5, *model.latent_shape)
    actions = np.zeros((2, 4, 4), np.float32)
    teacher, _ = model.dynamics_loss(latents, actions, generator=g())
    same, _ = model.dynamics_loss(latents, actions, generator=g(), own_frames=latents[:, 1:3])
    other, _ = model.dynamics_loss(latents, actions, generator=g(), own_frames=latents[:, 1:3] + 1.0)
    assert torch.isfinite(teacher) and torch.isfinite(same) and torch.isfinite(other)
    assert not torch.equal(same, other)  # the own history conditions the later frames
    for bad in (latents[:, 1:5], latents[:, :0], torch.zeros(2, 2, 3)):
        with pytest.raises(ValueError, match="own_frames must be"):
            model.dynamics_loss(latents, actions, generator=g(), own_frames=bad)


def test_stage_loss_rolls_the_model_out(dataset):
    from neuralsim.data import Dataset
    from neuralsim.train import batch_to_torch

    model = make_tiny_model(frames_per_latent=1).train()
    batch = batch_to_torch(next(Dataset(dataset).iter_windows(steps=4, batch_size=2, seed=0)), torch.device("cpu"))
    loss = StageLoss(model, "dynamics", None, self_forcing=1.0, self_forcing_frames=3)
    own = loss.own_rollout(model.encode(batch["frames"]), batch, 3, torch.Generator().manual_seed(0))
    assert own.shape == (2, 3, *model.latent_shape) and not own.requires_grad
    assert model.training  # rolled out in eval mode, then put back
    value, logs = loss(batch, torch.Generator().manual_seed(0))
    value.backward()
    assert torch.isfinite(value) and "flow" in logs


@pytest.mark.parametrize("kw", [dict(self_forcing=0.5, self_forcing_frames=2),
                                dict(streaming=True, own_history=0.5, one_step_fraction=0.7)],
                         ids=["self_forcing", "streaming"])
def test_own_rollout_training_runs_and_resumes_exactly(dataset, tmp_path, kw):
    import shutil

    train(train_config(dataset, tmp_path / "ae", stage="autoencoder", steps=4))
    for name in ("straight", "resumed", "teacher"):
        shutil.copytree(tmp_path / "ae", tmp_path / name)
    kw = dict(stage="dynamics", steps=6, **kw)
    straight = train(train_config(dataset, tmp_path / "straight", **kw))
    with pytest.raises(StopTraining):
        train(train_config(dataset, tmp_path / "resumed", stop_after=2, **kw))
    resumed = train(train_config(dataset, tmp_path / "resumed", resume=True, **kw))
    a, b = model_weights(straight), model_weights(resumed)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    teacher = model_weights(train(train_config(dataset, tmp_path / "teacher", stage="dynamics", steps=6)))
    assert any(not torch.equal(a[n], teacher[n]) for n in a)  # the own-rollout training changed the run


@pytest.mark.parametrize("change,message", [({"self_forcing": 1.5}, "--self-forcing must be a fraction in"),
                                            ({"self_forcing": 0.5, "self_forcing_frames": 4}, "--self-forcing-frames must be")])
def test_bad_self_forcing_arguments(dataset, tmp_path, change, message):
    with pytest.raises(TrainingError, match=message):
        train(train_config(dataset, tmp_path / "x", **change))


# --- streaming training: every frame trained as it is sampled (WorldModel.streaming_loss, train --streaming) ---


def _perturbed(model):
    torch.manual_seed(0)
    with torch.no_grad():  # zero-initialised output layers would hide any dependence on the history
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_streaming_loss_trains_against_the_committed_history(make_model):
    model = _perturbed(make_model).train()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    latents = torch.randn(2, 4, *model.latent_shape)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    teacher, logs = model.streaming_loss(latents, actions, generator=g(), own_history=0.0, one_step_fraction=1.0)
    assert torch.isfinite(teacher) and logs["own_fraction"] == 0.0
    teacher.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("dynamics.") and p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads) and any(gr.abs().sum() > 0 for gr in grads)
    own, logs = model.streaming_loss(latents, actions, generator=g(), own_history=1.0, one_step_fraction=1.0)
    assert logs["own_fraction"] == 1.0
    assert not torch.isclose(own, teacher)  # the model's own frames, not the real ones, are the history
    _, logs = model.streaming_loss(latents, actions, generator=g(), own_history=1.0, one_step_fraction=0.0)
    assert logs["own_fraction"] == 0.0  # only a one-step sample (tau = 1) is what sampling would commit
    with pytest.raises(ValueError, match="own_history and one_step_fraction must be in"):
        model.streaming_loss(latents, actions, own_history=1.5)
    with pytest.raises(ValueError, match="actions must have shape"):
        model.streaming_loss(latents, actions[:, :2])


def test_streaming_loss_learns_a_tiny_problem(make_model):
    model = make_model.train()
    latents = torch.randn(4, 4, *model.latent_shape).cumsum(dim=1) * 0.5  # each frame = the last + a step
    actions = np.zeros((4, 3, 4), np.float32)
    opt = torch.optim.Adam(model.dynamics.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, _ = model.streaming_loss(latents, actions, generator=torch.Generator().manual_seed(0), one_step_fraction=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_burn_in_frames_build_the_state_without_loss_or_gradient(make_model):
    """A burn-in changes the state the trained frames see (so their loss), the early frames get no gradient path,
    and the loss is the mean over the frames after it."""
    model = _perturbed(make_model).train()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    latents = torch.randn(2, 6, *model.latent_shape)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 5, 4)).astype(np.float32)
    plain, plain_logs = model.streaming_loss(latents[:, 3:], actions[:, 3:], generator=g(), one_step_fraction=1.0)
    burnt, logs = model.streaming_loss(latents, actions, generator=g(), one_step_fraction=1.0, burn_in=3)
    assert torch.isfinite(burnt) and np.isnan(logs["flow_first"]) and not np.isnan(plain_logs["flow_first"])
    assert not torch.isclose(burnt, plain)  # the last 3 frames are trained after a state of 3 more frames
    burnt.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("dynamics."))
    # burn_in=0 is the loss as it was; own history applies to the trained frames only
    again, _ = model.streaming_loss(latents[:, 3:], actions[:, 3:], generator=g(), one_step_fraction=1.0, burn_in=0)
    assert torch.equal(again, plain)
    _, own_logs = model.streaming_loss(latents, actions, generator=g(), own_history=1.0, one_step_fraction=1.0, burn_in=3)
    assert own_logs["own_fraction"] == 1.0
    for bad in (-1, 5, True):
        with pytest.raises(ValueError, match="burn_in must be an int in"):
            model.streaming_loss(latents, actions, burn_in=bad)


def test_own_history_grad_backpropagates_through_the_dreamed_frames(make_model):
    """The same loss either way; with ``own_history_grad`` a later frame's loss also reaches the passes that drew
    the own frames before it, so the gradients differ (they are equal when no history is own)."""
    model = _perturbed(make_model).train()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    latents = torch.randn(2, 5, *model.latent_shape)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 4, 4)).astype(np.float32)

    def grads(**kw):
        model.zero_grad()
        loss, _ = model.streaming_loss(latents, actions, generator=g(), one_step_fraction=1.0, **kw)
        loss.backward()
        return loss.detach(), [p.grad.clone() for n, p in model.named_parameters()
                               if n.startswith("dynamics.") and p.grad is not None]

    fixed, fixed_grads = grads(own_history=1.0)
    unrolled, unrolled_grads = grads(own_history=1.0, own_history_grad=True)
    assert torch.equal(fixed, unrolled)
    assert any(not torch.allclose(a, b) for a, b in zip(fixed_grads, unrolled_grads))
    real, real_grads = grads(own_history=0.0)
    real_again, real_again_grads = grads(own_history=0.0, own_history_grad=True)
    assert torch.equal(real, real_again) and all(torch.equal(a, b) for a, b in zip(real_grads, real_again_grads))


def test_release_weight_weighs_the_frame_after_the_keys_are_let_go(make_model):
    """Only a window that lets go of the keys changes its loss; the weight goes to the frame after the release."""
    model = _perturbed(make_model).train()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    latents = torch.randn(2, 6, *model.latent_shape)
    moving = np.full((2, 5, 4), 0.5, np.float32)
    released = moving.copy()
    released[:, 3:] = 0.0  # let go at step 3: frame 4 is the first reached by the zero action
    for acts, changes in ((moving, False), (released, True), (np.zeros_like(moving), False)):
        plain, _ = model.streaming_loss(latents, acts, generator=g(), one_step_fraction=1.0)
        weighted, _ = model.streaming_loss(latents, acts, generator=g(), one_step_fraction=1.0, release_weight=9.0)
        assert torch.equal(plain, weighted) != changes
    with pytest.raises(ValueError, match="release_weight must be >= 0"):
        model.streaming_loss(latents, released, release_weight=-1.0)


def test_train_with_a_burn_in_runs_and_resumes_only_with_it(dataset, tmp_path):
    out = tmp_path / "burn"
    train(train_config(dataset, out, streaming=True, window=5, burn_in=2, steps=2, ae_steps=1, checkpoint_every=1))
    log = (out / "logs" / "dynamics.csv").read_text().splitlines()
    assert len(log) == 3 and "flow_next" in log[0]
    with pytest.raises(TrainingError, match="--burn-in 1"):
        train(train_config(dataset, out, streaming=True, window=5, burn_in=1, steps=2, ae_steps=1, checkpoint_every=1,
                           resume=True))


@pytest.mark.parametrize("change,message", [
    ({"streaming": True, "own_history": 1.5}, "--own-history must be a fraction in"),
    ({"streaming": True, "one_step_fraction": -0.1}, "--one-step-fraction must be a fraction in"),
    ({"streaming": True, "self_forcing": 0.5, "self_forcing_frames": 2}, "--streaming and --self-forcing"),
    ({"burn_in": 2}, "--burn-in needs --streaming"),
    ({"streaming": True, "own_history_grad": True}, "--own-history-grad backpropagates"),
    ({"release_weight": 2.0}, "--release-weight weighs the streaming loss"),
    ({"streaming": True, "release_weight": -1.0}, "--release-weight must be a number >= 0"),
    ({"own_history": 0.5, "own_history_grad": True}, "--own-history-grad backpropagates"),
    ({"streaming": True, "window": 4, "burn_in": 3}, "--burn-in must leave at least 2 trained frames"),
    ({"streaming": True, "burn_in": -1}, "--burn-in must be an int >= 0"),
    ({"adversarial": 0.1}, "--adversarial scores the streaming loss"),
    ({"streaming": True, "adversarial": -0.1}, "--adversarial must be a number >= 0"),
    ({"streaming": True, "adversarial": 0.1, "critic_reads": "pixels"}, "--critic-reads must be latents or frames"),
    ({"streaming": True, "critic_warmup": 2}, "--critic-warmup warms up the critic of --adversarial"),
    ({"streaming": True, "adversarial": 0.1, "critic_warmup": -1}, "--critic-warmup must be an int >= 0"),
    ({"gradient_difference": 1.0}, "--gradient-difference compares the streaming loss"),
    ({"streaming": True, "gradient_difference": -1.0}, "--gradient-difference must be a number >= 0"),
])
def test_bad_streaming_arguments(dataset, tmp_path, change, message):
    with pytest.raises(TrainingError, match=message):
        train(train_config(dataset, tmp_path / "x", **change))


# --- the adversarial term: a latent critic scores the one-step samples (neuralsim.critic, train --adversarial) ---


def test_critic_terms_reach_only_their_own_side():
    from neuralsim.critic import FrameCritic, LatentCritic, adversarial_losses

    torch.manual_seed(0)
    critic = LatentCritic(4, width=8)
    assert critic(torch.randn(3, 4, 8, 8)).shape == (3, 16)  # a logit per 2x2 latent cell
    assert FrameCritic(3, width=8)(torch.randn(2, 3, 64, 64)).shape == (2, 64)  # a logit per 8x8 pixel patch
    real, fake = torch.randn(5, 4, 8, 8), torch.randn(5, 4, 8, 8, requires_grad=True)
    generator, critic_loss = adversarial_losses(critic, real, fake)
    (fake_grad,) = torch.autograd.grad(generator, fake, retain_graph=True)
    assert fake_grad.abs().sum() > 0
    generator.backward()  # the generator term leaves the critic's weights alone...
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.requires_grad for p in critic.parameters())  # ...and gives them back their flags
    fake.grad = None
    critic_loss.backward()  # the critic's term trains the critic, never the frames it judged
    assert fake.grad is None and all(p.grad is not None for p in critic.parameters())
    with pytest.raises(ValueError, match="channels and width must be >= 1"):
        LatentCritic(0)


@pytest.mark.parametrize("reads", ["latents", "frames"])
def test_streaming_loss_with_a_critic_adds_both_terms(make_model, reads):
    from neuralsim.critic import FrameCritic, LatentCritic

    model = _perturbed(make_model).train()
    model.autoencoder.requires_grad_(False)  # as the dynamics stage trains: the frame critic reads a frozen decoder
    critic = (LatentCritic(model.config.latent_channels, width=8) if reads == "latents"
              else FrameCritic(3 * model.config.frames_per_latent, width=8))
    latents = torch.randn(2, 5, *model.latent_shape)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 4, 4)).astype(np.float32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain, _ = model.streaming_loss(latents, actions, generator=g(), own_history=0.5, one_step_fraction=1.0)
    loss, logs = model.streaming_loss(latents, actions, generator=g(), own_history=0.5, one_step_fraction=1.0,
                                      critic=critic, adversarial_weight=0.5)
    assert {"adversarial", "critic"} <= set(logs) and torch.isfinite(loss)
    torch.testing.assert_close(loss, plain + 0.5 * logs["adversarial"] + logs["critic"], rtol=1e-5, atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n.startswith("dynamics."))
    with pytest.raises(ValueError, match="adversarial_weight must be >= 0 and needs a critic"):
        model.streaming_loss(latents, actions, adversarial_weight=0.5)


def test_adversarial_training_saves_its_critic_and_resumes_exactly(dataset, tmp_path):
    import shutil

    train(train_config(dataset, tmp_path / "ae", stage="autoencoder", steps=4))
    for name in ("straight", "resumed", "plain"):
        shutil.copytree(tmp_path / "ae", tmp_path / name)
    kw = dict(stage="dynamics", steps=4, streaming=True, own_history=0.5, one_step_fraction=1.0, adversarial=0.5,
              checkpoint_every=2)
    straight = train(train_config(dataset, tmp_path / "straight", **kw))
    with pytest.raises(StopTraining):
        train(train_config(dataset, tmp_path / "resumed", stop_after=2, **kw))
    assert (tmp_path / "resumed" / "checkpoints" / "dynamics-0000002" / "critic.safetensors").is_file()
    resumed = train(train_config(dataset, tmp_path / "resumed", resume=True, **kw))
    a, b = model_weights(straight), model_weights(resumed)
    assert not any("critic" in name for name in a)  # training only: never in the exported model
    for name in a:
        assert torch.equal(a[name], b[name]), name
    plain = model_weights(train(train_config(dataset, tmp_path / "plain", **{**kw, "adversarial": 0.0})))
    assert any(not torch.equal(a[n], plain[n]) for n in a)  # the critic's term changed the run
    log = (tmp_path / "straight" / "logs" / "dynamics.csv").read_text().splitlines()[0]
    assert "adversarial" in log and "critic" in log


def test_resuming_a_run_without_a_critic_with_one_is_refused(dataset, tmp_path):
    import json

    out = tmp_path / "run"
    kw = dict(steps=4, ae_steps=1, streaming=True, own_history=0.5, one_step_fraction=1.0, checkpoint_every=2)
    with pytest.raises(StopTraining):
        train(train_config(dataset, out, stop_after=2, **kw))
    with pytest.raises(TrainingError, match=r"--adversarial 0.5 \(the run has 0.0\)"):
        train(train_config(dataset, out, resume=True, adversarial=0.5, **kw))
    # a checkpoint written before the option existed has no such field: the missing critic is named instead
    state = out / "checkpoints" / "dynamics-0000002" / "trainer_state.json"
    saved = json.loads(state.read_text())
    for name in ("adversarial", "critic_reads"):
        saved["train_config"].pop(name)
    state.write_text(json.dumps(saved))
    with pytest.raises(TrainingError, match="holds no critic.safetensors"):
        train(train_config(dataset, out, resume=True, adversarial=0.5, **kw))


def test_a_warming_critic_learns_alone(make_model):
    from neuralsim.critic import FrameCritic

    model = _perturbed(make_model).train()
    model.autoencoder.requires_grad_(False)
    critic = FrameCritic(3 * model.config.frames_per_latent, width=8)
    latents = torch.randn(2, 5, *model.latent_shape)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 4, 4)).astype(np.float32)
    loss, logs = model.streaming_loss(latents, actions, generator=torch.Generator().manual_seed(0), own_history=0.5,
                                      one_step_fraction=1.0, critic=critic, adversarial_weight=0.5, critic_only=True)
    loss.backward()
    assert "critic" in logs and all(p.grad is not None for p in critic.parameters())
    assert all(p.grad is None for p in model.parameters())  # the frames were drawn without gradient
    with pytest.raises(ValueError, match="critic_only trains the critic alone and needs a critic"):
        model.streaming_loss(latents, actions, critic_only=True)


def test_critic_warmup_leaves_the_dynamics_as_it_was(dataset, tmp_path):
    import shutil

    from safetensors.torch import load_file

    train(train_config(dataset, tmp_path / "ae", stage="autoencoder", steps=4))
    shutil.copytree(tmp_path / "ae", tmp_path / "run")
    before = model_weights(tmp_path / "ae")
    kw = dict(stage="dynamics", streaming=True, own_history=0.5, one_step_fraction=1.0, adversarial=0.5,
              critic_reads="frames", checkpoint_every=2)
    warmed = model_weights(train(train_config(dataset, tmp_path / "run", steps=2, critic_warmup=2, **kw)))
    for name in before:
        assert torch.equal(before[name], warmed[name]), name  # two steps of the critic alone: the dynamics waited
    critic_steps = load_file(tmp_path / "run" / "checkpoints" / "dynamics-0000002" / "critic.safetensors")
    assert any(k.startswith("optimizer.") for k in critic_steps)  # ...while the critic was stepped
    log = (tmp_path / "run" / "logs" / "dynamics.csv").read_text()
    assert "critic" in log.splitlines()[0]


def test_gradient_difference_loss_scores_edges_not_means():
    from neuralsim.critic import gradient_difference_loss

    torch.manual_seed(0)
    real = torch.zeros(2, 3, 16, 16)
    real[..., :, 8:] = 1.0  # a vertical edge
    blurred = torch.nn.functional.avg_pool2d(real, 5, stride=1, padding=2, count_include_pad=False)
    textured = real + 0.2 * (torch.arange(16) % 2).float()  # stripes where the real frame is flat
    assert gradient_difference_loss(real, real) == 0
    assert gradient_difference_loss(blurred, real) > 0 and gradient_difference_loss(textured, real) > 0
    shifted = real.roll(1, dims=-1)  # the same edge one pixel off (and a wrap-around edge)
    assert gradient_difference_loss(shifted, real) > 0
    with pytest.raises(ValueError, match="fake and real must be"):
        gradient_difference_loss(real, real[:, :, :8])


def test_streaming_loss_with_the_gradient_difference_adds_it(make_model):
    model = _perturbed(make_model).train()
    model.autoencoder.requires_grad_(False)
    latents = torch.randn(2, 5, *model.latent_shape)
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 4, 4)).astype(np.float32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain, _ = model.streaming_loss(latents, actions, generator=g(), own_history=0.5, one_step_fraction=1.0)
    loss, logs = model.streaming_loss(latents, actions, generator=g(), own_history=0.5, one_step_fraction=1.0,
                                      gradient_difference_weight=2.0)
    assert logs["gradient_difference"] > 0
    torch.testing.assert_close(loss, plain + 2.0 * logs["gradient_difference"], rtol=1e-5, atol=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n.startswith("dynamics."))
    assert all(p.grad is None for p in model.autoencoder.parameters())
    with pytest.raises(ValueError, match="gradient_difference_weight must be >= 0"):
        model.streaming_loss(latents, actions, gradient_difference_weight=-1.0)


# --- the frame memory: the last real frame's pixels back where the camera sees them again (train memory) ---


def test_frame_memory_gates_toward_the_warped_memory():
    from neuralsim.frame_memory import MAX_TRANSLATION_STEPS, FrameMemory, relative_pose

    torch.manual_seed(0)
    memory = FrameMemory(8, fovy_deg=70.0, translation_speed=0.08)
    frame, remembered = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    still = relative_pose(torch.eye(4).repeat(2, 1, 1), torch.eye(4).repeat(2, 1, 1))
    out, gate = memory(frame, remembered, still)
    assert out.shape == frame.shape and gate.shape == (2, 1, 32, 32)
    assert float(gate.detach().max()) < 0.02  # nearly closed at init: the dream's frame as decoded
    with torch.no_grad():
        memory.net[-1].bias.fill_(20.0)  # wide open: a camera that has not moved sees the memory itself
        out, gate = memory(frame, remembered, still)
    torch.testing.assert_close(out, remembered, atol=1e-4, rtol=0)
    walked = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    walked[:, 2, 3] = 0.08 * MAX_TRANSLATION_STEPS  # walked away: the rotation-only warp no longer places the memory
    with torch.no_grad():
        out, gate = memory(frame, remembered, walked)
    assert float(gate.max()) == 0.0 and torch.equal(out, frame)
    turned = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    turned[:, 0, 0] = turned[:, 2, 2] = -1.0  # turned around: nothing of the memory is in view
    turned[:, 0, 2], turned[:, 2, 0] = 0.0, 0.0
    with torch.no_grad():
        out, gate = memory(frame, remembered, turned)
    assert float(gate.max()) == 0.0 and torch.equal(out, frame)
    with pytest.raises(ValueError, match="width must be >= 1"):
        FrameMemory(0, 70.0, 0.08)


def _walk(forward: float = 0.0, right: float = 0.0, yaw: float = 0.0, batch: int = 1) -> torch.Tensor:
    from neuralsim.camera import camera_step

    eye = torch.eye(4, dtype=torch.float64).repeat(batch, 1, 1)
    action = torch.tensor([[forward, right, yaw, 0.0]] * batch, dtype=torch.float64)
    return camera_step(eye, torch.zeros(batch, dtype=torch.float64), action, translation_speed=0.08,
                       rotation_speed_deg=4.0)[0]


def test_depth_warp_follows_a_walk_and_reduces_to_the_rotation_warp():
    from neuralsim.camera import camera_intrinsics, reprojection_grid, rotation_warp_grid, splat_depth

    plane = torch.full((1, 32, 32), 2.0)  # a wall 2 m ahead, facing the camera
    walked = _walk(forward=5.0)  # 0.4 m toward it: the view magnifies by 2 / 1.6 about the centre
    seen_from_walk = splat_depth(walked, plane, 70.0)
    torch.testing.assert_close(seen_from_walk, torch.full_like(plane, 1.6))  # the fill closes the magnified holes
    grid, z = reprojection_grid(walked, seen_from_walk, 32, 32, 70.0)
    torch.testing.assert_close(z, plane)
    fx, _, cx, cy = camera_intrinsics(32, 32, 70.0)
    cols = (torch.arange(32.0) - cx) * 1.6 / 2.0 + cx  # where each new column was in the remembered view
    torch.testing.assert_close(grid[0, 16, :, 0], cols / 31 * 2 - 1)
    turned = _walk(yaw=3.0)  # a turn moves the pixels the same whatever their depth
    near = torch.rand(1, 32, 32) * 3 + 0.5
    grid, _ = reprojection_grid(turned, splat_depth(turned, near, 70.0), 32, 32, 70.0)
    torch.testing.assert_close(grid, rotation_warp_grid(turned, 32, 32, 70.0), atol=1e-5, rtol=0)


def test_splat_depth_is_a_z_buffer_over_the_four_pixels_around_each_point():
    """Against a plain loop: every point in front of the new camera writes its depth to the (up to) four pixels around
    where it projects, the nearest wins; nothing lands elsewhere (no fill passes). Views that push points off the
    image, behind the camera and to infinity included."""
    import math

    from neuralsim.camera import _pixel_directions, camera_intrinsics, splat_depth

    g = torch.Generator().manual_seed(0)
    B, H, W = 3, 12, 16
    depth = torch.rand(B, H, W, generator=g) * 3 + 0.2
    depth[0, :2, :2] = math.inf
    rel = torch.stack([_walk(forward=4.0), _walk(right=-6.0, yaw=5.0), _walk(forward=-3.0, yaw=-20.0)])[:, 0]
    fx, fy, cx, cy = intrinsics = camera_intrinsics(H, W, 70.0)
    dirs = _pixel_directions(H, W, intrinsics, "cpu").float()
    expected = torch.full((B, H, W), math.inf)
    for b in range(B):
        points = (depth[b].reshape(-1, 1) * dirs - rel[b, :3, 3].float()) @ rel[b, :3, :3].float()
        z_all = points[:, 2]
        u_all = fx * points[:, 0] / z_all.clamp_min(1e-2) + cx  # in float32, as the splat projects
        v_all = fy * points[:, 1] / z_all.clamp_min(1e-2) + cy
        for z, u, v in zip(z_all.tolist(), u_all.tolist(), v_all.tolist()):
            if not (z > 1e-2 and math.isfinite(u) and math.isfinite(v)):  # behind the camera, or a point at infinity
                continue
            for iu in (math.floor(u), math.floor(u) + 1):
                for iv in (math.floor(v), math.floor(v) + 1):
                    if 0 <= iu < W and 0 <= iv < H:
                        expected[b, iv, iu] = min(expected[b, iv, iu].item(), z)
    got = splat_depth(rel, depth, 70.0, fill=0)
    assert torch.isinf(got).any() and torch.isfinite(got).any()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_depth_warp_keeps_a_turned_edge_sharp_and_its_colours_in_range(monkeypatch):
    import neuralsim.frame_memory as frame_memory

    memory = frame_memory.FrameMemory(8, fovy_deg=70.0, translation_speed=0.08, depth_width=8)
    stripes = torch.ones(1, 3, 32, 32)
    stripes[..., ::2] = -1.0  # one-pixel stripes: the sharpest edges a frame holds, at the ends of the range
    wall = torch.full((1, 32, 32), 2.0)
    turned = _walk(yaw=0.21)  # a fraction of a pixel: bilinear sampling averages neighbouring stripes
    with torch.no_grad():
        warped, seen = memory.warp(stripes, turned, wall)
        monkeypatch.setattr(frame_memory, "WARP_MODE", "bilinear")
        bilinear, _ = memory.warp(stripes, turned, wall)
    contrast = lambda x: float(x[0, 0, 4:-4, 4:-4].diff(dim=-1).abs().mean())
    assert bool(seen[..., 4:-4, 4:-4].all())
    assert float(warped.min()) >= -1.0 and float(warped.max()) <= 1.0  # bicubic overshoot clamped
    assert contrast(warped) > 1.3 * contrast(bilinear)


def test_a_seen_gate_shows_the_memory_wherever_the_warp_sees_it_and_never_runs_the_net():
    from neuralsim.config import WorldModelConfig
    from neuralsim.frame_memory import FrameMemory

    torch.manual_seed(0)
    memory = FrameMemory(8, fovy_deg=70.0, translation_speed=0.08, depth_width=8, gate="seen")
    memory.net = None  # "seen" must not need it
    frame, remembered = torch.zeros(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 2 - 1
    wall = torch.full((1, 32, 32), 2.0)
    turned = _walk(yaw=2.0)
    with torch.no_grad():
        out, gate = memory(frame, remembered, turned, wall)
        warped, seen = memory.warp(remembered, turned, wall)
    inner = -torch.nn.functional.max_pool2d(-seen.float(), 3, stride=1, padding=1)[0, 0] > 0.5  # off the feathered seam
    assert bool(inner.any()) and torch.equal(gate[0, 0][inner], torch.ones(int(inner.sum())))
    torch.testing.assert_close(out[0][:, inner], warped[0][:, inner])
    with torch.no_grad():  # walked past the memory's range: nothing of it
        far, far_gate = memory(frame, remembered, _walk(forward=30.0), wall)
    assert torch.equal(far, frame) and float(far_gate.max()) == 0.0
    with pytest.raises(ValueError, match='gate must be "learned" or "seen"'):
        FrameMemory(8, 70.0, 0.08, gate="sometimes")
    trained = FrameMemory(8, fovy_deg=70.0, translation_speed=0.08, depth_width=8, gate="seen")
    out, _ = trained(frame, remembered, turned, wall, gate="learned")  # what `train memory` runs: the net it trains
    out.square().mean().backward()
    assert trained.net[-1].weight.grad is not None and float(trained.net[-1].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="frame_memory_gate"):
        WorldModelConfig(frame_memory_gate="open")


def test_photometric_depth_loss_prefers_the_true_depth():
    from neuralsim.frame_memory import photometric_depth_loss

    class Constant(torch.nn.Module):  # a "depth net" that sees a wall at a fixed distance
        def __init__(self, depth: float):
            super().__init__()
            self.depth = depth

        def forward(self, frames):
            return torch.full(frames.shape[:1] + frames.shape[2:], self.depth)

    torch.manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8) * 2 - 1, size=(32, 32), mode="bilinear")
    rel = _walk(forward=3.0, right=1.0)
    from neuralsim.camera import reprojection_grid, splat_depth

    depth = splat_depth(rel, torch.full((1, 32, 32), 2.0), 70.0)  # the same wall after the walk
    grid, _ = reprojection_grid(rel, depth, 32, 32, 70.0)
    second = torch.nn.functional.grid_sample(texture, grid, align_corners=True)
    losses = {d: photometric_depth_loss(Constant(d), texture, second, rel, 70.0)[1]["photometric"]
              for d in (0.5, 2.0, 8.0)}
    assert losses[2.0] < 0.2 * min(losses[0.5], losses[8.0]), losses


def test_a_depth_aware_memory_keeps_a_walked_view_that_the_rotation_warp_closes_on():
    from neuralsim.frame_memory import MAX_TRANSLATION_STEPS, FrameMemory

    torch.manual_seed(0)
    memory = FrameMemory(8, fovy_deg=70.0, translation_speed=0.08, depth_width=8)
    with torch.no_grad():
        memory.net[-1].bias.fill_(20.0)  # the gate wide open
    frame, remembered = torch.zeros(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 2 - 1
    walked = _walk(forward=MAX_TRANSLATION_STEPS)
    with torch.no_grad():
        out, gate = memory(frame, remembered, walked)  # depth from the memory's own net
        depth = memory.memory_depth(remembered)
        out_given, _ = memory(frame, remembered, walked, depth)
    assert depth.shape == (1, 32, 32) and bool((depth > 0).all())
    assert float(gate.mean()) > 0.5 and torch.equal(out, out_given)  # the rotation-only memory is closed here
    with pytest.raises(ValueError, match="depth_width >= 0"):
        FrameMemory(8, 70.0, 0.08, depth_width=-1)


def test_train_memory_adds_trains_and_uses_a_frame_memory(dataset, tmp_path):
    from neuralsim.model import WorldModel
    from neuralsim.session import DreamSession

    train(train_config(dataset, tmp_path / "base", steps=2, ae_steps=2, camera=True))
    kw = dict(stage="memory", init=str(tmp_path / "base"), steps=4, window=3, memory_context=4, memory_rollouts=6,
              batch_size=8)
    out = train(train_config(dataset, tmp_path / "mem", **kw))
    model = WorldModel.from_pretrained(out)
    assert model.config.frame_memory_width > 0 and model.frame_memory is not None
    base, trained = model_weights(tmp_path / "base"), model_weights(out)
    assert all(torch.equal(base[k], trained[k]) for k in base)  # only the memory was trained
    assert any(k.startswith("frame_memory.") for k in trained)
    provenance = model.config.provenance  # the memory's run beside the model's own, which stays
    assert provenance["frame_memory"]["stage"] == "memory" and provenance["train_config"]["stage"] == "all"
    log = (tmp_path / "mem" / "logs" / "memory.csv").read_text().splitlines()[0]
    assert "gate" in log and "dream_mse" in log
    session = DreamSession(model, dtype="float32")
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, *model.config.image_size, 3), dtype=np.uint8)
    state, _, _ = session.start(2, torch.Generator().manual_seed(0), image=frames)
    assert state.memory_frame.shape == (2, 3, *model.config.image_size) and state.memory_c2w.shape == (2, 4, 4)
    step = session.step(state, np.zeros((2, 4), np.float32), torch.Generator().manual_seed(1))
    plain = session.decode(step.latent[:, None], first_frame=False)  # without the state: no memory
    assert step.frames.shape == plain.shape
    with torch.no_grad():
        model.frame_memory.net[-1].bias.fill_(20.0)  # the gate wide open: an idle camera shows the remembered frame
    step = session.step(state, np.zeros((2, 4), np.float32), torch.Generator().manual_seed(1))
    assert np.abs(step.frames[:, 0].astype(int) - frames[:, 0].astype(int)).max() <= 1
    assert not np.array_equal(step.frames, session.decode(step.latent[:, None], first_frame=False))
    deep = train(train_config(dataset, tmp_path / "deep", **{**kw, "init": str(out), "seed": 1,
                                                             "config_overrides": {"frame_memory_depth_width": 8}}))
    deep_model = WorldModel.from_pretrained(deep)
    assert deep_model.config.frame_memory_depth_width == 8
    added = {k: v for k, v in model_weights(deep).items() if k.startswith("frame_memory.depth.")}
    assert added and "photometric" in (tmp_path / "deep" / "logs" / "memory.csv").read_text().splitlines()[0]
    state, _, _ = DreamSession(deep_model, dtype="float32").start(2, torch.Generator().manual_seed(0), image=frames)
    assert state.memory_depth.shape == (2, *model.config.image_size) and bool((state.memory_depth > 0).all())
    frozen = train(train_config(dataset, tmp_path / "frozen", **{**kw, "init": str(deep), "memory_depth_frozen": True}))
    before, after = model_weights(deep), model_weights(frozen)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("frame_memory.depth.") for k in changed)  # the gate alone trained
    assert "photometric" not in (tmp_path / "frozen" / "logs" / "memory.csv").read_text().splitlines()[0]
    record = WorldModel.from_pretrained(frozen).config.provenance["frame_memory"]  # each run keeps the ones before
    assert record["memory_depth_frozen"] and record["before"]["config_overrides"] == {"frame_memory_depth_width": 8}
    assert record["before"]["before"]["init"] == str(tmp_path / "base") and "before" not in record["before"]["before"]
    with pytest.raises(TrainingError, match="--memory-depth-frozen keeps a frame memory's depth net"):
        train(train_config(dataset, tmp_path / "bad", **{**kw, "init": str(out), "memory_depth_frozen": True}))
    fresh = train(train_config(dataset, tmp_path / "fresh", **{**kw, "config_overrides": {"frame_memory_depth_width": 8}}))
    fresh_config = WorldModel.from_pretrained(fresh).config  # a first memory run may ask for its depth net at once
    assert fresh_config.frame_memory_width > 0 and fresh_config.frame_memory_depth_width == 8
    with pytest.raises(TrainingError, match="frame_memory_depth_width"):
        train(train_config(dataset, tmp_path / "bad", **{**kw, "config_overrides": {"frame_memory_depth_width": -1}}))
    with pytest.raises(TrainingError, match="--memory-rollouts must be an int >= 1"):
        train(train_config(dataset, tmp_path / "bad", **{**kw, "memory_rollouts": 0}))
    with pytest.raises(TrainingError, match="the longest episode of --data"):
        train(train_config(dataset, tmp_path / "bad", **{**kw, "memory_context": 16}))
