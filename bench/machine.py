"""The machine the figures belong to, and the memory and malloc settings of a process (``/proc``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["machine_info", "malloc_environment", "rss_mib"]


def read_key_values(path: Path, separator: str) -> dict[str, str]:
    """The first value of each key in a ``key<separator>value`` file; empty when it cannot be read."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return values
    for line in lines:
        key, found, value = line.partition(separator)
        if found and key.strip() not in values:
            values[key.strip()] = value.strip()
    return values


def machine_info() -> dict[str, Any]:
    """The machine the figures belong to: cores, CPU, memory, library versions and load."""
    import keras
    import tensorflow as tf

    cpu = read_key_values(Path("/proc/cpuinfo"), ":")
    memory = read_key_values(Path("/proc/meminfo"), ":")
    total_kib = memory.get("MemTotal", "0 kB").split()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "memory_total_mib": round(int(total_kib) / 1024.0, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def malloc_environment(pid: int) -> dict[str, str]:
    """The glibc malloc settings (``MALLOC_*`` variables) a process was started with."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    settings = {}
    for entry in raw.split(b"\0"):
        key, found, value = entry.decode(errors="replace").partition("=")
        if found and key.startswith("MALLOC_"):
            settings[key] = value
    return settings


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory (``VmRSS``) and its peak (``VmHWM``) of a process, in MiB."""
    status = read_key_values(Path(f"/proc/{pid}/status"), ":")

    def mebibytes(key: str) -> float:
        return round(int(status.get(key, "0 kB").split()[0]) / 1024.0, 1)

    return {"rss_mib": mebibytes("VmRSS"), "peak_rss_mib": mebibytes("VmHWM")}
