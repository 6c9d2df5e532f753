"""Shared helpers for the benchmarks: a description of the machine and section updates of docs/BENCHMARKS.md.

Each benchmark owns one block of the file, between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``,
and replaces only that block, so the benchmarks can be rerun one at a time.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX), read from ``lscpu``'s flags."""
    return bool({"avx512_bf16", "amx_bf16"} & set(_lscpu().get("Flags", "").split()))


def machine_summary() -> dict[str, str]:
    """CPU model, the SIMD flags that matter for torch, core count and library versions (read now)."""
    import diffusers
    import pytorch_lightning
    import torch

    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    return {
        "cpu": info.get("Model name", platform.processor() or "unknown CPU")
        + (f" (family {info['CPU family']}, model {info['Model']})" if "CPU family" in info and "Model" in info else ""),
        "flags": " ".join(f for f in INTERESTING_FLAGS if f in flags) or "none of " + ", ".join(INTERESTING_FLAGS),
        "nproc": str(os.cpu_count()),
        "threads": str(torch.get_num_threads()),
        "bf16": "native bf16" if native_bf16() else "no native bf16: bf16 is emulated and slow",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "lightning": pytorch_lightning.__version__,
    }


def machine_line() -> str:
    m = machine_summary()
    return (f"{m['cpu']}, {m['nproc']} cores ({m['flags']}; {m['bf16']}), torch {m['torch']}, "
            f"diffusers {m['diffusers']}, Lightning {m['lightning']}")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def _header() -> str:
    return (
        "# Benchmarks\n\n"
        f"Measured on {machine_line()}. Each section below is written by one script in `benchmarks/` "
        "(`make bench` runs them all); rerun a script to refresh its section. Figures on a shared machine "
        "move with the background load, which each section records.\n"
    )


def update_section(name: str, markdown: str, path: str | Path = "docs/BENCHMARKS.md") -> Path:
    """Replace the block ``<!-- name:start -->…<!-- name:end -->`` of ``path`` (or append it), atomically."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _header()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_START = time.perf_counter()


def note(message: str) -> None:
    """A progress line on stderr, with the seconds since the script started."""
    print(f"[{time.perf_counter() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
