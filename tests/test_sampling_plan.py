"""Quotas, the generation plan, per-image seeds, schedulers, and safe class-folder names."""

from __future__ import annotations

import hashlib

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from synthaug.config import SAMPLERS, QuotaConfig
from synthaug.errors import SynthaugError
from synthaug.sampling import _SCHEDULERS, PlanRow, build_plan, make_scheduler, plan_quotas
from synthaug.seeds import derive_seed
from synthaug.writers import safe_name, safe_names

REAL = {"a": 10, "b": 4, "c": 7}


# --------------------------------------------------------------------------------------------- quotas


def test_quota_balance_max_tops_up_to_the_largest_class():
    assert plan_quotas(REAL, QuotaConfig(balance="max")) == {"a": 0, "b": 6, "c": 3}


def test_quota_per_class():
    assert plan_quotas(REAL, QuotaConfig(per_class=5)) == {"a": 5, "b": 5, "c": 5}
    assert plan_quotas(REAL, QuotaConfig(per_class=0)) == {"a": 0, "b": 0, "c": 0}


@pytest.mark.parametrize(
    ("total", "expected"),
    [(9, [3, 3, 3]), (10, [4, 3, 3]), (11, [4, 4, 3]), (2, [1, 1, 0]), (0, [0, 0, 0])],
)
def test_quota_total_is_split_evenly_earlier_classes_take_the_remainder(total, expected):
    quotas = plan_quotas(REAL, QuotaConfig(total=total))
    assert list(quotas) == ["a", "b", "c"]
    assert list(quotas.values()) == expected
    assert sum(quotas.values()) == total


def test_quota_ratio():
    assert plan_quotas({"a": 10, "b": 4, "c": 6}, QuotaConfig(ratio=1.5)) == {"a": 15, "b": 6, "c": 9}
    assert plan_quotas({"a": 10, "b": 4, "c": 6}, QuotaConfig(ratio=0)) == {"a": 0, "b": 0, "c": 0}
    assert plan_quotas({"a": 10, "b": 3}, QuotaConfig(ratio=0.3)) == {"a": 3, "b": 1}


def test_quota_counts_unnamed_classes_get_zero():
    assert plan_quotas(REAL, QuotaConfig(counts={"b": 2, "c": 9})) == {"a": 0, "b": 2, "c": 9}


def test_quota_counts_unknown_class_is_an_error():
    with pytest.raises(SynthaugError) as info:
        plan_quotas({"cat": 3, "dog": 5}, QuotaConfig(counts={"dgo": 3}))
    message = str(info.value)
    assert "generate.quota.counts: unknown class 'dgo'" in message
    assert "did you mean 'dog'?" in message
    assert "cat" in message


def test_quota_keeps_class_order():
    real = {"zebra": 1, "ant": 2, "yak": 3}
    for quota in (
        QuotaConfig(balance="max"),
        QuotaConfig(per_class=1),
        QuotaConfig(total=4),
        QuotaConfig(ratio=1.0),
        QuotaConfig(counts={"ant": 1}),
    ):
        assert list(plan_quotas(real, quota)) == ["zebra", "ant", "yak"]


# --------------------------------------------------------------------------------------------- plan


def test_build_plan_rows():
    plan = build_plan([2, 0, 3], seed=7)
    assert [r.position for r in plan] == [0, 1, 2, 3, 4]
    assert [r.label for r in plan] == [0, 0, 2, 2, 2]
    assert [r.index for r in plan] == [0, 1, 0, 1, 2]
    assert [r.seed for r in plan] == [derive_seed(7, r.label, r.index) for r in plan]


def test_build_plan_first_index_continues_a_class():
    plan = build_plan([2, 1, 3], seed=7, first_index=[5, 0, 10])
    assert [r.position for r in plan] == list(range(6))
    assert [(r.label, r.index) for r in plan] == [(0, 5), (0, 6), (1, 0), (2, 10), (2, 11), (2, 12)]
    # An image's seed depends on its class and index, not on where the plan starts.
    full = {(r.label, r.index): r.seed for r in build_plan([7, 1, 13], seed=7)}
    assert all(full[(r.label, r.index)] == r.seed for r in plan)


def test_build_plan_empty():
    assert len(build_plan([0, 0], seed=0)) == 0


def test_a_plan_holds_its_rows_in_arrays():
    """The plan of 200,000 images: 32 bytes a row (four int64), not a Python object per row."""
    import tracemalloc

    tracemalloc.start()
    try:
        plan = build_plan([50_000] * 4, seed=0)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 40 * len(plan), f"{held / len(plan):.0f} bytes a row"
    assert plan[123_456] == PlanRow(123_456, 2, 23_456, derive_seed(0, 2, 23_456))
    chosen = plan[plan.position % 7 == 3]
    assert len(chosen) == len(range(3, 200_000, 7)) and chosen[1].position == 10


# --------------------------------------------------------------------------------------------- seeds


def test_derive_seed_known_values():
    # Computed once; a change here changes every synthetic image of every existing recipe.
    assert derive_seed(0, 0, 0) == 6748966113152638938
    assert derive_seed(7, 3, 11) == 5715907525059284894


@pytest.mark.parametrize(("seed", "label", "index"), [(0, 0, 0), (7, 3, 11), (123456789, 41, 99999)])
def test_derive_seed_is_the_documented_blake2b_formula(seed, label, index):
    digest = hashlib.blake2b(f"synthaug/{seed}/{label}/{index}".encode(), digest_size=8).digest()
    assert derive_seed(seed, label, index) == int.from_bytes(digest, "little") >> 1


def test_derive_seed_is_63_bit_and_unique_over_a_plan():
    plan = build_plan([1500, 1500, 1000], seed=0)
    seeds = [r.seed for r in plan]
    assert len(set(seeds)) == len(seeds) == 4000
    assert all(0 <= s < 2**63 for s in seeds)
    # Usable as a torch.Generator seed.
    torch.Generator().manual_seed(max(seeds))


def test_derive_seed_separates_its_fields():
    assert derive_seed(0, 1, 12) != derive_seed(0, 11, 2)
    assert derive_seed(1, 0, 0) != derive_seed(0, 0, 0)
    assert derive_seed(0, 0, 1) != derive_seed(0, 1, 0)


# --------------------------------------------------------------------------------------------- schedulers


EXPECTED_CLASS = {
    "dpmpp": DPMSolverMultistepScheduler,
    "dpmpp-ode": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}


@pytest.fixture(scope="module")
def training_scheduler():
    # Not the diffusers defaults, so a scheduler that ignored the training config would show.
    return DDPMScheduler(
        num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )


def test_every_configured_sampler_has_a_scheduler():
    assert set(SAMPLERS) == set(EXPECTED_CLASS) == set(_SCHEDULERS)


@pytest.mark.parametrize("name", list(EXPECTED_CLASS))
def test_make_scheduler_keeps_the_training_noise_schedule(name, training_scheduler):
    scheduler = make_scheduler(name, training_scheduler.config)
    assert type(scheduler) is EXPECTED_CLASS[name]
    # Euler's sigma is infinite at t = T of the cosine schedule, so it starts one spacing below T.
    assert scheduler.config.timestep_spacing == ("leading" if name == "euler" else "trailing")
    assert scheduler.config.num_train_timesteps == 500
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert scheduler.config.prediction_type == "v_prediction"
    assert torch.allclose(scheduler.betas, training_scheduler.betas)
    assert torch.allclose(scheduler.alphas_cumprod, training_scheduler.alphas_cumprod)
    scheduler.set_timesteps(4)
    # Trailing spacing starts at the noisiest training timestep; Euler's leading spacing one spacing below.
    assert int(scheduler.timesteps[0]) == (375 if name == "euler" else 499)
    assert len(scheduler.timesteps) == 4


def test_make_scheduler_reads_a_saved_config(tmp_path, training_scheduler):
    training_scheduler.save_pretrained(tmp_path)
    config = DDPMScheduler.load_config(tmp_path)  # has _class_name and _diffusers_version
    scheduler = make_scheduler("dpmpp", config)
    assert scheduler.config.algorithm_type == "sde-dpmsolver++"
    assert scheduler.config.solver_order == 2
    assert torch.allclose(scheduler.alphas_cumprod, training_scheduler.alphas_cumprod)


def test_make_scheduler_does_not_change_the_training_config(training_scheduler):
    before = dict(training_scheduler.config)
    make_scheduler("ddim", training_scheduler.config)
    assert dict(training_scheduler.config) == before


def test_make_scheduler_unknown_name(training_scheduler):
    with pytest.raises(SynthaugError) as info:
        make_scheduler("dpm++", training_scheduler.config)
    assert "'dpm++'" in str(info.value)
    assert all(name in str(info.value) for name in EXPECTED_CLASS)


# --------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name", ["../../etc", "..", ".", "...", "/abs/path", "a\\b", "..\\..\\win", " ../x", "a\x00b", "", "\n"]
)
def test_safe_name_cannot_escape_its_folder(name):
    safe = safe_name(name)
    assert safe
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".")
    assert safe not in (".", "..")
    assert all(ch.isprintable() for ch in safe)


def test_safe_name_keeps_ordinary_names():
    assert safe_name("golden retriever") == "golden retriever"
    assert safe_name("class_3-b.v2") == "class_3-b.v2"
    assert safe_name("café") == "café"
    assert safe_name("cafe\u0301") == "café"  # NFC: one folder whatever the input normalisation
    assert safe_name(7) == "7"


def test_safe_name_of_traversal():
    assert safe_name("../../etc") == "_.._etc"


@pytest.mark.parametrize(
    "names",
    [
        ["Cat", "cat", "CAT"],
        ["a/b", "a_b", "A_B"],
        ["..", "", "_"],
        ["A-2", "a", "A"],  # a suffixed name must not collide with a name already taken
        ["x", "X", "x-1"],
    ],
)
def test_safe_names_are_unique_case_insensitively(names):
    safe = safe_names(names)
    assert len(safe) == len(names)
    assert len({s.casefold() for s in safe}) == len(names), safe
    assert all(s == safe_name(s) for s in safe)  # each is itself a safe name


def test_safe_names_leaves_distinct_names_alone():
    assert safe_names(["cat", "dog", "Bird"]) == ["cat", "dog", "Bird"]
    safe = safe_names(["Cat", "cat"])
    assert safe[0] == "Cat" and safe[1].startswith("cat") and safe[1] != "cat"


@pytest.mark.parametrize("name", ["dpmpp", "dpmpp-ode", "unipc"])
def test_multistep_solvers_threshold_their_clean_image_estimate(name, training_scheduler):
    """Without dynamic thresholding their first step from t = T of the cosine schedule saturates samples."""
    scheduler = make_scheduler(name, training_scheduler.config)
    assert scheduler.config.thresholding and scheduler.config.sample_max_value == 1.0
