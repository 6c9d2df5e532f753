"""``precision: auto`` follows the hardware (faked here: CPU flags, a CUDA device), the choice is recorded, and
images are the same whatever the batch size within a precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_run, generated

from synthaug import sampling
from synthaug.sampling import resolve_precision


@pytest.mark.parametrize(("flags", "expected"), [
    ({"fpu", "avx2", "avx512f", "avx512_bf16"}, "bf16-mixed"),   # AMD Zen 4, Intel Cooper Lake
    ({"fpu", "avx2", "amx_bf16", "amx_tile"}, "bf16-mixed"),      # Intel Sapphire Rapids
    ({"fpu", "avx2", "avx512f"}, "32-true"),                      # bf16 would be emulated
])
def test_auto_follows_the_cpu_flags(monkeypatch, flags: set[str], expected: str):
    monkeypatch.setattr(sampling, "cpu_flags", lambda: flags)
    precision, why = resolve_precision("auto", "cpu")
    assert precision == expected and why.startswith("auto: ")
    assert ("avx512_bf16" in why or "amx_bf16" in why)
    for explicit in ("32-true", "bf16-mixed"):  # a precision the recipe sets is kept, whatever the hardware
        assert resolve_precision(explicit, "cpu") == (explicit, "set in the recipe")


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_follows_the_gpu(monkeypatch, bf16: bool, expected: str):
    monkeypatch.setattr(sampling, "cpu_flags", lambda: {"avx512_bf16"})  # the GPU decides, not the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    assert resolve_precision("auto", "cuda")[0] == expected



@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"avx2"}], ids=["native-bf16", "no-bf16"])
def test_the_choice_is_recorded_and_batches_do_not_change_images(smoke_model: Path, tmp_path: Path, monkeypatch,
                                                                  flags: set[str]):
    monkeypatch.setattr(sampling, "cpu_flags", lambda: flags)
    expected = "bf16-mixed" if flags == {"avx512_bf16"} else "32-true"
    a, info, card = generated(copy_run(smoke_model, tmp_path / "a"), "generate.batch_size=3")
    b, _, _ = generated(copy_run(smoke_model, tmp_path / "b"), "generate.batch_size=16")
    assert info["precision"] == expected and info["precision_reason"].startswith("auto: ")
    assert f"**precision**: `{expected}`" in card
    np.testing.assert_array_equal(a, b)  # within a precision, the batch size changes nothing
    explicit, info32, _ = generated(copy_run(smoke_model, tmp_path / "c"), "generate.precision=32-true")
    assert info32["precision"] == "32-true" and info32["precision_reason"] == "set in the recipe"
    if expected == "32-true":
        np.testing.assert_array_equal(a, explicit)  # auto without native bf16 is plain float32
