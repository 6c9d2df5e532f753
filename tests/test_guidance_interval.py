"""``generate.guidance_interval``: guidance on a share of the denoising steps only (Kynkäänniemi et al. 2024), counted
as diffusers' ``ClassifierFreeGuidance(start=, stop=)`` counts it; the unguided steps run one UNet row per image
instead of two; the images still depend only on their seeds, and the choice is recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_run, generated

from synthaug.sampling import Generator, guided_steps


@pytest.mark.parametrize("interval", [(0.0, 1.0), (0.0, 0.5), (0.2, 0.7), (0.35, 0.6), (0.5, 1.0)])
@pytest.mark.parametrize("steps", [4, 10, 20, 25])
def test_the_guided_steps_are_the_ones_diffusers_guides(interval, steps):
    from diffusers.guiders import ClassifierFreeGuidance

    logging.getLogger("diffusers.guiders.guider_utils").setLevel(logging.ERROR)  # "experimental" notice
    guider = ClassifierFreeGuidance(guidance_scale=2.0, start=interval[0], stop=interval[1])
    expected = []
    for i in range(steps):
        guider.set_state(step=i, num_inference_steps=steps, timestep=None)
        if guider._is_cfg_enabled():
            expected.append(i)
    assert list(guided_steps(steps, interval, 2.0)) == expected


def test_guidance_one_needs_no_unconditional_prediction():
    assert list(guided_steps(20, (0.0, 1.0), 1.0)) == []


class RowCounter:
    """Wraps a UNet's forward and records how many rows each call gets."""

    def __init__(self, unet):
        self.rows: list[int] = []
        self.forward = unet.forward
        unet.forward = self

    def __call__(self, sample, *args, **kwargs):
        self.rows.append(len(sample))
        return self.forward(sample, *args, **kwargs)


def test_unguided_steps_run_one_row_per_image_and_change_the_images(smoke_model: Path):
    gen = Generator.from_pretrained(smoke_model / "model")
    labels, seeds = [0, 3, 7], [11, 12, 13]
    full = gen.sample_arrays(labels, seeds, guidance=2.0, steps=4, autocast=False)
    counter = RowCounter(gen.unet)
    default = gen.sample_arrays(labels, seeds, guidance=2.0, steps=4, autocast=False, guidance_interval=(0.0, 1.0))
    assert counter.rows == [6, 6, 6, 6]
    np.testing.assert_array_equal(default, full)

    counter.rows.clear()
    half = gen.sample_arrays(labels, seeds, guidance=2.0, steps=4, autocast=False, guidance_interval=(0.0, 0.5))
    assert counter.rows == [6, 6, 3, 3]  # the two noisiest steps guided, the last two conditional alone
    assert np.abs(half.astype(int) - full.astype(int)).max() > 0, "the interval must change the images"
    one = gen.sample_arrays(labels[:1], seeds[:1], guidance=2.0, steps=4, autocast=False, guidance_interval=(0.0, 0.5))
    np.testing.assert_array_equal(one[0], half[0])  # still a function of the image's own seed


def test_a_variation_guides_the_same_noise_levels(smoke_model: Path):
    gen = Generator.from_pretrained(smoke_model / "model")
    counter = RowCounter(gen.unet)
    init = np.zeros((2, gen.image_size, gen.image_size, 1), dtype=np.uint8)
    gen.sample_arrays([1, 2], [5, 6], guidance=2.0, steps=10, autocast=False, init=init, strength=0.5,
                      guidance_interval=(0.0, 0.7))
    assert counter.rows == [4, 4, 2, 2, 2]  # steps 5..9 of 10: 5 and 6 lie in [0, 7), 7..9 do not



def test_generate_records_the_interval_and_batches_do_not_change_images(smoke_model: Path, tmp_path: Path):
    interval = "generate.guidance_interval=[0, 0.6]"
    a, info, card = generated(copy_run(smoke_model, tmp_path / "a"), interval, "generate.batch_size=3")
    b, _, _ = generated(copy_run(smoke_model, tmp_path / "b"), interval, "generate.batch_size=16")
    full, info_full, _ = generated(copy_run(smoke_model, tmp_path / "c"))
    np.testing.assert_array_equal(a, b)
    assert info["guidance_interval"] == [0.0, 0.6] and info_full["guidance_interval"] == [0.0, 1.0]
    assert "guidance_interval" in card and "0.6" in card
    assert np.abs(a - full).max() > 0
