"""Showing a dream's steps apart from drawing them: a child process that decodes and judges a native model's steps.

A step's frame goes through the decoder, the frame memory and the termination detector, and none of them feeds the
next step (:meth:`neuralsim.session.DreamSession.rollout`). When the actions are known ahead, the showing can run
beside the dynamics. On a second *thread* the two halves share Python's GIL, and both are mostly Python-side
per-op overhead at batch 1, so they take it in turn (1.37x, not 2x, on two cores). :class:`DecodeProcess` runs the
showing in a second *process*, with its own interpreter; the session shares the steps' showings between the two
processes, so neither core idles whichever half is slower (docs/performance.md sections 15-16).

Protocol (a socket pair; no pickles: each message is a JSON header and the raw bytes of its tensors):

* ``model``: the :class:`~neuralsim.model.WorldModel`'s config and its weights, sent at every rollout (a few MB), so
  weights changed in place between rollouts are what the child decodes with; the child answers ``ready`` once it has
  built the model (the child's first 2-4 s go to importing torch; the caller keeps the steps, or shows them itself,
  until then);
* ``step``: a step's latent and the state fields the showing reads (:data:`SHOWN_FIELDS`), each sent only when it
  is another tensor than the one sent last (the frame memory's tensors change every few steps, not at each);
* ``close``.

The child answers each ``step`` with the frames, the reward and termination probability the step shows, and the
judged state's ``reward`` and ``termination_prob`` tensors, or with the error it raised. The outputs are bit for bit
those of the calling process: same weights, same kernels, the same torch threads, the same autocast, and every
tensor rebuilt with the strides it had (a channels-last frame stays channels-last, so a convolution takes the same
path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

#: The fields of a :class:`~neuralsim.model.WorldState` that decoding and judging a step read (besides its latent).
SHOWN_FIELDS = ("step", "reward", "termination_prob", "c2w", "memory_frame", "memory_c2w", "memory_depth",
                "memory_earlier", "memory_earlier_pose", "memory_earlier_depth")


def _no_context() -> dict[str, Any]:
    """The state fields :func:`show_step` never reads (the recurrent cache, the prompt), left empty."""
    empty = torch.zeros(0)
    return {"cache": [], "text_kv": [], "text_mask": empty, "text_tokens": empty}


def shown_fields(state: Any) -> Any:
    """``state`` with only what :func:`show_step` reads (its latent and :data:`SHOWN_FIELDS`; no recurrent cache nor
    prompt keys), as the child rebuilds it: a step waiting to be shown holds no more."""
    return dataclasses.replace(state, **_no_context())


def show_step(model: Any, latent: torch.Tensor, state: Any, decode: bool, judge: bool
              ) -> tuple[Any, np.ndarray | None, np.ndarray, np.ndarray]:
    """What a step shows after the dynamics, under the caller's inference mode and autocast: ``(state judged, frames
    uint8 [B, k, H, W, 3] or None, reward [B], termination probability [B])``. ``judge``: the model's termination
    detector judges the frame (decoded anyway)."""
    frames = model.decode(latent[:, None], first_frame=False, context=state).cpu().numpy() if decode or judge else None
    if judge:
        state = model.judge_termination(state, frames)
    reward, term = model.predict_reward_termination(state)
    return state, frames, reward.float().cpu().numpy().astype(np.float32), term.float().cpu().numpy().astype(np.float32)


# --- messages: a 4-byte header length, a JSON header, the tensors' raw bytes -------------------------------------------
# (safetensors' own save and load took 0.3-0.5 ms for a step's few small tensors, a tenth of the step; this is the same
# idea, a JSON header of dtypes, shapes and offsets before the raw bytes, without the per-call overhead)
def _pack(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """Each tensor is stored in the order of its strides, largest first, and rebuilt with the same strides."""
    chunks, layout, offset = [], {}, 0
    for name, t in tensors.items():
        t = t.detach()
        order = sorted(range(t.ndim), key=lambda d: -t.stride(d))
        data = t.permute(order).contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        layout[name] = [_dtype_name(t.dtype), [t.shape[d] for d in order], order, offset, len(data)]
        chunks.append(data)
        offset += len(data)
    head = json.dumps({**header, "tensors": layout}).encode()
    return b"".join([struct.pack("<I", len(head)), head, *chunks])


def _unpack(message: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    (n,) = struct.unpack_from("<I", message)
    header = json.loads(message[4:4 + n].decode())
    body = bytearray(message[4 + n:])  # writable: the tensors are views of it
    tensors = {}
    for name, (dtype, shape, order, offset, size) in header.pop("tensors").items():
        flat = torch.frombuffer(body, dtype=torch.uint8, offset=offset, count=size) if size else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(getattr(torch, dtype)).reshape(shape).permute(np.argsort(order).tolist())
    return header, tensors


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


_READY = _pack({"kind": "ready"}, {})  # the child's answer to a model: built, and showing the steps sent from now on


# --- the child ------------------------------------------------------------------------------------------------------
def _serve(conn: Any) -> None:
    """The child's loop: build the model, then show each step in order until ``close`` (or the pipe ends)."""
    from neuralsim.config import WorldModelConfig
    from neuralsim.model import WorldModel, WorldState

    model, built = None, None
    shown: dict[str, torch.Tensor | None] = {}
    while True:
        try:
            header, tensors = _unpack(conn.recv_bytes())
        except EOFError:
            return
        kind = header["kind"]
        if kind == "close":
            return
        try:
            if kind == "model":
                torch.set_num_threads(int(header["threads"]))
                if model is None or header["config"] != built:
                    config = WorldModelConfig.from_dict(header["config"])
                    model, built = WorldModel.from_weights(config, tensors, source="the weights sent"), header["config"]
                else:  # the same config: only the weights may have changed
                    model.load_state_dict(tensors, strict=True)
                for name, value in header["attributes"].items():
                    setattr(model, name, value)
                model.eval()
                shown = {}
                casts = [getattr(torch, d) for d in header["autocast"]]
                judge = bool(header["judge"])
                conn.send_bytes(_READY)  # until this arrives, the caller keeps its steps (or shows them itself)
                continue
            # a step
            shown.update({name: tensors.get(name) for name in header["sent"]})
            latent = tensors["latent"]
            state = WorldState(**_no_context(), latent=latent, **{name: shown.get(name) for name in SHOWN_FIELDS})
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.inference_mode())
                for dtype in casts:  # only those held: a disabled autocast would switch off the one around it
                    stack.enter_context(torch.autocast("cpu", dtype=dtype))
                judged, frames, reward, term = show_step(model, latent, state, True, judge)
            out = {"reward": torch.from_numpy(reward), "term": torch.from_numpy(term),
                   "judged_reward": judged.reward, "judged_termination_prob": judged.termination_prob}
            if frames is not None:
                out["frames"] = torch.from_numpy(frames)
            conn.send_bytes(_pack({"kind": "shown"}, out))
        except Exception as exc:  # raised to the caller, in the calling process
            conn.send_bytes(_pack({"kind": "error", "type": type(exc).__name__, "message": str(exc)}, {}))


# --- the parent -----------------------------------------------------------------------------------------------------
class DecodeProcess:
    """A child process that shows a native model's steps (decode, frame memory, termination detector) in order, while
    the calling process draws the next ones. Started by :meth:`neuralsim.session.DreamSession.rollout` with
    ``overlap="process"`` and kept by the session for its next rollouts (start: 2-4 s, importing torch); closed by
    :meth:`close`, or when the session is collected or the interpreter exits (the child also ends when the pipe does).

    Use: :meth:`begin` once per rollout; once :meth:`ready`, :meth:`submit` steps and take a :meth:`result` for each, in
    the order submitted. The steps not submitted are shown by the caller (:func:`show_step`): each step's showing
    reads only that step's latent and state, so any of them may be shown on either side.
    """

    def __init__(self) -> None:
        # `python -m neuralsim.decoding` over a socket pair, not multiprocessing: its "spawn" runs the caller's main
        # script again in the child (a script without an `if __name__ == "__main__"` guard would start its rollout
        # there), and "fork" is unsafe in a process that runs torch's thread pools.
        # The child imports the neuralsim this process runs (its sys.path, as PYTHONPATH), and runs in a session of
        # its own: a Ctrl-C at the terminal interrupts the caller, whose close() (or the pipe's end) ends the child.
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen([sys.executable, "-m", "neuralsim.decoding", str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        # Two threads move the bytes (both release the GIL while they wait on the socket): a writer, so the caller
        # never blocks on a full socket (the child's first seconds go to importing torch, while the dynamics goes on),
        # and a reader that drains the child's answers as they come (were the writer blocked sending a step while the
        # child is blocked sending an answer nobody reads, both would wait forever).
        self._outbox: queue.Queue = queue.Queue()
        self._answers: queue.Queue = queue.Queue()
        self._readies: queue.Queue = queue.Queue()
        self._awaited = 0  # models sent whose "ready" has not been taken yet
        self._broken: BaseException | None = None
        self._writer = threading.Thread(target=self._write, daemon=True, name="neuralsim-decode-writer")
        self._reader = threading.Thread(target=self._read, daemon=True, name="neuralsim-decode-reader")
        self._writer.start()
        self._reader.start()
        self._sent: dict[str, Any] = {}
        self._judge = False

    def _write(self) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                return
            try:
                self._conn.send_bytes(message)
            except (OSError, ValueError) as exc:  # the child ended (BrokenPipeError), or close() closed the socket
                self._broken = exc
                return

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv_bytes()
            except (EOFError, OSError):
                self._answers.put(None)
                return
            (self._readies if message == _READY else self._answers).put(message)

    @property
    def alive(self) -> bool:
        return self._process.poll() is None and self._broken is None

    def begin(self, model: Any, *, judge: bool, autocast: list[torch.dtype]) -> None:
        """Send ``model``'s config and weights, and how the steps are shown: ``judge`` with the termination detector,
        under ``autocast``, the CPU autocasts the calling process holds around its own showing, outermost first
        (the caller's, the session's)."""
        attributes = {"channels_last_decode": bool(model.channels_last_decode), "fast_streaming": model.fast_streaming}
        self._send({"kind": "model", "config": model.config.to_dict(), "threads": torch.get_num_threads(),
                    "attributes": attributes, "judge": judge, "autocast": [_dtype_name(d) for d in autocast]},
                   dict(model.state_dict()))
        self._sent, self._judge = {}, judge
        self._awaited += 1

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the child has built the model of the last :meth:`begin` and will show the steps submitted from now
        on (waiting up to ``timeout`` seconds). Until then the caller keeps its steps, or shows them itself: the
        child's first seconds go to importing torch. True as well when the child failed or ended: :meth:`result`
        raises why."""
        deadline = time.monotonic() + timeout
        while self._awaited:
            if not self._answers.empty():  # an error (building the model) or the child's end, answered in its place
                return True
            try:
                self._readies.get(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
                self._awaited -= 1
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return False
        return True

    def submit(self, latent: torch.Tensor, state: Any) -> None:
        """Send a step's latent and the fields of its state the showing reads, each only when it is another tensor
        than the one sent last (the frame memory keeps its tensors for several steps). A state's tensors are never
        changed in place (the dynamics makes new ones; a decoding thread could not read them otherwise)."""
        tensors, sent = {"latent": latent}, []
        for name in SHOWN_FIELDS:
            value = getattr(state, name)
            if name in self._sent and self._sent[name] is value:
                continue
            self._sent[name] = value  # held, so its id cannot be reused by another tensor
            sent.append(name)
            if value is not None:
                tensors[name] = value
        self._send({"kind": "step", "sent": sent}, tensors)

    def answered(self) -> bool:
        """Whether an answer (or the end of the child) is in, so :meth:`result` will not wait."""
        return not self._answers.empty()

    def result(self, state: Any = None) -> tuple[Any, np.ndarray | None, np.ndarray, np.ndarray]:
        """The next step's ``(state judged, frames, reward, termination probability)``, as :func:`show_step` gives
        them; ``state`` is that step's state from the dynamics (None: the judged state is not needed, None is
        returned in its place)."""
        message = self._answers.get()
        if message is None:
            raise RuntimeError(f"the decoding process ended unexpectedly (exit code {self._process.poll()})")
        header, out = _unpack(message)
        if header["kind"] == "error":
            error = {"FloatingPointError": FloatingPointError, "ValueError": ValueError}.get(header["type"], RuntimeError)
            raise error(f"{header['message']} (in the decoding process)")
        if self._judge and state is not None:
            device = state.termination_prob.device
            state = dataclasses.replace(state, reward=out["judged_reward"].to(device),
                                        termination_prob=out["judged_termination_prob"].to(device))
        frames = out["frames"].numpy() if "frames" in out else None
        return state, frames, out["reward"].numpy(), out["term"].numpy()

    def _send(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if not self.alive:
            raise RuntimeError(f"the decoding process ended unexpectedly (exit code {self._process.poll()})")
        self._outbox.put(_pack(header, tensors))

    def close(self, *, now: bool = False) -> None:
        """End the child (idempotent): after the steps sent so far, or ``now`` (killed: a rollout that failed or was
        interrupted does not wait for the child to work through its backlog)."""
        if self._conn.closed:
            return
        if now:
            self._process.kill()
        self._outbox.put(_pack({"kind": "close"}, {}))
        self._outbox.put(None)
        self._writer.join(timeout=10)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._conn.close()
        self._reader.join(timeout=10)


if __name__ == "__main__":  # the child: python -m neuralsim.decoding FD
    _serve(Connection(int(sys.argv[1])))
