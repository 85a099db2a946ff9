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
