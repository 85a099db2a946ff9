"""Device and dtype decisions, in one place: is bf16 native here, and what ``dtype="auto"`` means.

bf16 is only worth it where the hardware runs it: on CUDA with bf16 support, or on a CPU with bf16 matmul
instructions: x86 AMX-BF16 or AVX512-BF16, ARM's BF16 extension. torch's own capability string tops out at
``AVX512`` on such x86 CPUs, so the instruction flags are read from the OS (``/proc/cpuinfo`` on Linux,
``sysctl`` on macOS). Elsewhere (e.g. an AVX2 CPU) a bf16 matmul is emulated and ~10x slower than fp32, so
``"auto"`` picks fp32. Where the batch is known and small (a single env), ``"auto"`` also picks fp32 on a CPU:
there the step is bound by per-op overhead, not by matmuls, and bf16 autocast only adds casts.

Core layer: imports only torch. The env, the trainer, the CLI and the benchmarks all use it.
"""

from __future__ import annotations

import torch

#: CPU capabilities (``torch.backends.cpu.get_cpu_capability()``) with hardware bf16 matmuls.
NATIVE_BF16_CPU_CAPABILITIES = ("AVX512_BF16", "AMX")

#: With ``dtype="auto"`` and a known batch size on a CPU, bf16 only from this many rows: below it a step is bound by
#: per-op overhead (a batch-1 step is ~1,000 small ops), which autocast's casts add to, so bf16 is slower than fp32
#: even where it is native (WorldModel.step + decode, 2-core Xeon with AMX, 1 thread, bf16 speed ÷ fp32: batch 1
#: 0.93x, 2 0.75x, 4 0.81x, 8 0.91x, 16 1.06x; docs/performance.md).
AUTO_BF16_MIN_BATCH_CPU = 16

#: Accepted dtype names; ``None`` marks ``"auto"``.
DTYPE_NAMES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def cpu_capability() -> str:
    """The CPU's vector capability as torch reports it (``"AVX2"``, ``"AVX512"``, ...), or ``"unknown"``."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch without torch.backends.cpu.get_cpu_capability
        return "unknown"


#: CPU instruction flags (as Linux's /proc/cpuinfo and macOS's sysctl name them) that run bf16 matmuls in hardware.
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")

_bf16_flags_cache: tuple[str, ...] | None = None


def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's hardware-bf16 instruction flags (e.g. ``("amx_bf16", "avx512_bf16")``); ``()`` if none or unknown."""
    global _bf16_flags_cache
    if _bf16_flags_cache is None:
        found: set[str] = set()
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() in ("flags", "Features"):  # x86 / ARM
                        found.update(value.split())
        except OSError:
            import platform
            import subprocess

            if platform.system() == "Darwin":  # Apple silicon: M2 and later have FEAT_BF16
                try:
                    out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                         timeout=5).stdout.strip()
                    if out == "1":
                        found.add("bf16")
                except (OSError, subprocess.SubprocessError):
                    pass
        _bf16_flags_cache = tuple(flag for flag in NATIVE_BF16_CPU_FLAGS if flag in found)
    return _bf16_flags_cache


def bf16_is_native(device: torch.device | str | None = None) -> bool:
    """True where bf16 matmuls run at hardware speed on ``device``.

    Args:
        device: the device to ask about. ``None`` means the default compute device: CUDA if
            available, else the CPU.

    Returns:
        ``True`` on CUDA with bf16 support, or on a CPU with AMX-BF16/AVX512-BF16/ARM BF16 (:func:`cpu_bf16_flags`,
        or torch's capability string); ``False`` otherwise.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_capability() in NATIVE_BF16_CPU_CAPABILITIES or bool(cpu_bf16_flags())
    return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str, *, batch_size: int | None = None
                  ) -> torch.dtype:
    """Turn a dtype name (or ``torch.dtype``) into the compute dtype to use on ``device``.

    Args:
        dtype: ``"auto"`` (bf16 only where :func:`bf16_is_native`, else fp32), a name from
            :data:`DTYPE_NAMES` (``"float32"``/``"fp32"``, ``"bfloat16"``/``"bf16"``,
            ``"float16"``/``"fp16"``), or a ``torch.dtype`` among float32, bfloat16, float16.
        device: where the computation runs; float16 needs CUDA.
        batch_size: the batch the computation runs at, if known: ``"auto"`` on a CPU then picks bf16 only from
            :data:`AUTO_BF16_MIN_BATCH_CPU` rows (smaller batches run faster in fp32). None: as if large.

    Returns:
        ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``.

    Raises:
        ValueError: naming ``dtype`` on an unknown name or dtype, or float16 off CUDA.
    """
    device = torch.device(device)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str) and dtype in DTYPE_NAMES:
        small_cpu_batch = device.type == "cpu" and batch_size is not None and batch_size < AUTO_BF16_MIN_BATCH_CPU
        resolved = DTYPE_NAMES[dtype] or (torch.bfloat16 if bf16_is_native(device) and not small_cpu_batch
                                          else torch.float32)
    else:
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16' (or a torch.dtype), got {dtype!r}")
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {resolved}")
    if resolved == torch.float16 and device.type != "cuda":
        raise ValueError(f"dtype=float16 needs a CUDA device, got device={str(device)!r}; use 'bfloat16' or 'float32'")
    return resolved


__all__ = ["AUTO_BF16_MIN_BATCH_CPU", "NATIVE_BF16_CPU_CAPABILITIES", "NATIVE_BF16_CPU_FLAGS", "DTYPE_NAMES", "cpu_capability", "cpu_bf16_flags",
           "bf16_is_native", "resolve_dtype"]
