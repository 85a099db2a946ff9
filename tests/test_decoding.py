"""neuralsim.decoding: the messages of the decoding process keep each tensor's values, dtype and strides."""

import pytest
import torch

from neuralsim.decoding import _pack, _unpack


def test_a_message_keeps_values_dtypes_and_strides():
    frame = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)  # a convolution's layout
    tensors = {"frame": frame, "pose": torch.eye(4, dtype=torch.float64)[None], "step": torch.tensor([3, 4]),
               "scalar": torch.tensor(1.5), "moved": torch.arange(24.).reshape(2, 3, 4).transpose(0, 2)}
    header, back = _unpack(_pack({"kind": "step", "sent": ["frame"]}, tensors))
    assert header["kind"] == "step" and header["sent"] == ["frame"]
    for name, t in tensors.items():
        assert torch.equal(back[name], t) and back[name].dtype == t.dtype, name
        assert back[name].stride() == t.stride(), name


def test_an_empty_message():
    header, back = _unpack(_pack({"kind": "close"}, {}))
    assert header["kind"] == "close" and back == {}


def test_the_child_ends_when_its_pipe_closes():
    from neuralsim.decoding import DecodeProcess

    worker = DecodeProcess()
    assert worker.alive
    worker.close()
    assert not worker.alive and worker._process.returncode == 0
    worker.close()  # idempotent
    with pytest.raises(RuntimeError, match="the decoding process ended"):
        worker.result(None)


def test_close_now_kills_the_child():
    from neuralsim.decoding import DecodeProcess

    worker = DecodeProcess()
    worker.close(now=True)
    assert not worker.alive and worker._process.returncode is not None


def test_ready_comes_once_the_child_has_built_each_rollouts_model():
    """The caller shows the steps itself until `ready`; a second `begin` (the next rollout) waits for its own."""
    from conftest import make_tiny_model
    from neuralsim.decoding import DecodeProcess

    model = make_tiny_model()
    worker = DecodeProcess()
    try:
        worker.begin(model, judge=False, autocast=[])
        assert worker.ready(timeout=120)
        assert worker.ready()  # taken once: stays ready
        worker.begin(model, judge=False, autocast=[])
        worker.begin(model, judge=False, autocast=[])  # a rollout that ended before the hand-off leaves its "ready"
        assert worker.ready(timeout=120) and worker._awaited == 0 and not worker.answered()
    finally:
        worker.close()


def test_a_model_the_child_cannot_build_is_answered_in_place_of_ready():
    """`ready` is True when the child failed, so the next `result` raises the child's error."""
    import dataclasses
    import types

    from conftest import make_tiny_model
    from neuralsim.decoding import DecodeProcess

    model = make_tiny_model()
    wrong = types.SimpleNamespace(config=dataclasses.replace(model.config, width=model.config.width * 2),
                                  state_dict=model.state_dict, channels_last_decode=False, fast_streaming=True)
    worker = DecodeProcess()
    try:
        worker.begin(wrong, judge=False, autocast=[])
        assert worker.ready(timeout=120)
        with pytest.raises(ValueError, match=r"the weights sent: tensor '\S+' has shape .*in the decoding process"):
            worker.result(None)
    finally:
        worker.close(now=True)
