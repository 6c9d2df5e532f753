"""Hostile recipes (issue 13): YAML bombs, deep nesting, non-finite numbers, unchecked augment parameters,
compute settings Lightning would refuse, an empty ``--out``. Each is refused at load time with exit 2 and
one line naming the file or key and the fix, before anything is written.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import SMOKE, assert_one_line, invoke, snapshot

from synthaug.config import validate_recipe
from synthaug.recipe_yaml import MAX_YAML_ALIASES, MAX_YAML_DEPTH, YAMLTooLarge, yaml_load


def bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs" value: anchor i lists anchor i-1 ``width`` times, width^levels values in all."""
    parts = ["a: &a [" + ", ".join(["x"] * width) + "]"]
    for prev, name in zip("abcdefghij", "bcdefghijk"[: levels - 1]):
        parts.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * width) + "]")
    return "{" + ", ".join(parts) + "}"


def bomb_recipe() -> str:
    # Where the probe put it: augment parameters took any value, and the dry-run's dump expanded it. The
    # tests below expect the loader's message, so they also fail if only the augment schema stops it.
    return f"data: {{source: 'builtin:digits'}}\ntrain:\n  augment:\n    - Affine: {bomb()}\n"


def deep(levels: int = 50_000) -> str:
    return "[" * levels + "]" * levels


def run_capped(args: list, cwd: Path, memory: int = 1 << 30, timeout: float = 30) -> subprocess.CompletedProcess:
    """``synthaug ARGS`` in a child process with at most ``memory`` bytes of address space, killed (SIGKILL)
    after ``timeout``: a missing bound makes this test fail, not hang or take the machine down."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "synthaug.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=cap)


# --------------------------------------------------------------------------------------------- YAML bounds


def test_the_bomb_is_a_bomb_and_is_refused_by_the_loader():
    # PyYAML shares an anchor's object among its aliases, so without the bound this parses in no time;
    # anything that walks the result (validation, the dry-run's dump, the digest) expands it.
    with pytest.raises(YAMLTooLarge, match="expands to more than"):
        yaml_load(bomb())
    small = yaml.safe_load(bomb(levels=3, width=3))
    assert small["c"] == [[["x"] * 3] * 3] * 3


@pytest.mark.parametrize("route", ["recipe file", "run directory", "--set value"])
def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path, route):
    run = tmp_path / "run"
    if route == "recipe file":
        (tmp_path / "bomb.yaml").write_text(bomb_recipe())
        args, origin = ["data", "bomb.yaml", "--dry-run"], "bomb.yaml: "
    elif route == "run directory":
        run.mkdir()
        (run / "recipe.yaml").write_text(bomb_recipe())
        args, origin = ["generate", run, "--dry-run"], f"{run / 'recipe.yaml'}: "
    else:
        args, origin = ["train", SMOKE, "--out", run, "--set", f"train.augment=[{{Affine: {bomb()}}}]"], "--set '"
    before = snapshot(tmp_path)
    result = run_capped(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr[-2000:]
    line = result.stderr.strip()
    assert line.startswith(f"synthaug: error: {origin}"), line
    assert "expands to more than 200,000 values" in line and "write a smaller recipe" in line
    assert snapshot(tmp_path) == before, "nothing is written"


def test_a_recipe_that_never_ends_is_refused_after_one_mebibyte(tmp_path):
    result = run_capped(["data", "/dev/zero", "--dry-run"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == ("synthaug: error: /dev/zero: over 1,048,576 bytes, too large for a recipe; "
                                     "pass a recipe file or a run directory")


def test_a_recipe_file_over_one_mebibyte_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("data: {source: 'builtin:digits'}\n# " + "x" * (1 << 20) + "\n")
    assert_one_line(invoke("data", path, "--dry-run"), 2, f"{path}: over 1,048,576 bytes, too large for a recipe")


def test_a_set_value_over_one_mebibyte_is_refused():
    result = invoke("data", SMOKE, "--set", "name=" + "n" * (2 << 20), "--dry-run")
    assert_one_line(result, 2, "--set 'name=nnn", "2,097,152 characters of YAML, over the 1,048,576 a recipe may "
                                                  "have; shorten it")


@pytest.mark.parametrize("route", ["recipe file", "--set value"])
def test_50000_deep_nesting_is_refused_with_one_line(tmp_path, route):
    if route == "recipe file":
        path = tmp_path / "deep.yaml"
        path.write_text(f"data: {{source: 'builtin:digits'}}\nname: {deep()}\n")
        result, origin = invoke("data", path, "--dry-run"), f"{path}: "
    else:
        result, origin = invoke("data", SMOKE, "--set", f"name={deep()}", "--dry-run"), "--set 'name=[[["
    line = assert_one_line(result, 2, origin, f"YAML nested deeper than {MAX_YAML_DEPTH} levels at line ",
                           "remove the extra nesting")
    assert len(line) < 300, "the --set text is shortened in the message"


def test_nesting_through_aliases_counts_too(tmp_path):
    # Each anchor is 20 levels deep, well within the bound; the alias puts one inside the other.
    inner = "[" * 20 + "1" + "]" * 20
    path = tmp_path / "r.yaml"
    path.write_text(f"a: &a {inner}\ntrain: {{augment: [{{Affine: {{p: {'[' * 20}*a{']' * 20}}}}}]}}\n")
    assert_one_line(invoke("data", path, "--dry-run"), 2, f"{path}: YAML nested deeper than {MAX_YAML_DEPTH}")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("train: {augment: [{Affine: {p: &a [1, *a]}}]}\n")
    assert_one_line(invoke("data", path, "--dry-run"), 2, f"{path}: a YAML alias refers to its own anchor at line 1")


def test_more_aliases_than_the_bound_are_refused(tmp_path):
    path = tmp_path / "many.yaml"
    seeds = ", ".join(["*s"] * (MAX_YAML_ALIASES + 1))
    path.write_text(f"s: &s 1\nevaluate: {{seeds: [{seeds}]}}\n")
    assert_one_line(invoke("data", path, "--dry-run"), 2, f"{path}: more than {MAX_YAML_ALIASES} YAML aliases")
    # A few aliases, as people write them, are fine.
    path.write_text("generate: {quota: {counts: {a: &n 2, b: *n, c: *n}}}\n")
    assert invoke("data", path, "--dry-run").exit_code == 0


def test_python_tags_are_still_refused():
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        yaml_load("x: !!python/object/apply:os.system ['true']")


# --------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.lr=.inf", "train.lr: Input should be a finite number (got inf)"),
        ("train.lr=.nan", "train.lr: Input should be a finite number (got nan)"),
        ("generate.guidance=.inf", "generate.guidance: Input should be a finite number"),
        ("generate.guidance=2000", "generate.guidance: Input should be less than or equal to 50 (got 2000)"),
        ("generate.quota={ratio: .inf}", "generate.quota.ratio: Input should be a finite number"),
        ("generate.quota={counts: {'3': .inf}}", "generate.quota.counts.3: Input should be a finite number"),
        ("train.max_minutes=.inf", "train.max_minutes: Input should be a finite number"),
        ("train.max_minutes=1e300", "train.max_minutes: Input should be less than or equal to 525600"),
        ("data.subset.imbalance=.inf", "data.subset.imbalance: Input should be a finite number"),
        ("evaluate.lr=-.inf", "evaluate.lr: Input should be a finite number"),
        ("train.snr_gamma=.nan", "train.snr_gamma: Input should be a finite number"),
        ("generate.guidance_interval=[0.8, 0.2]", "generate.guidance_interval [0.8, 0.2] must be [start, stop] with "
                                                  "0 <= start < stop <= 1"),
        ("generate.guidance_interval=[0, .nan]", "generate.guidance_interval.1: Input should be a finite number"),
        ("model.block_out_channels=[]", "model.block_out_channels: List should have at least 1 item"),
        ("model.attention=[]", "model.attention: List should have at least 1 item"),
        ("output_dir=''", "output_dir: '' is an empty folder name; give a folder, or null for runs/<name>"),
        (f"name={'n' * 300}", "is 300 bytes, longer than a folder name may be (255); shorten it"),
    ],
)
def test_values_that_would_give_garbage_are_refused(setting, expected):
    result = invoke("train", SMOKE, "--set", setting, "--dry-run")
    assert_one_line(result, 2, f"{SMOKE}: ", expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("{scale: [0.9, .inf]}", "train.augment.0.Affine.scale.1: inf is not a finite number; give a finite value"),
        ("{translate_px: {x: [-1, .nan]}}", "train.augment.0.Affine.translate_px.x.1: nan is not a finite number"),
        ("{scale: [[[[1]]]]}", "train.augment.0.Affine.scale.0.0.0: nested deeper than 3 levels"),
        ("{scale: [" + ", ".join(["1"] * 65) + "]}", "train.augment.0.Affine.scale: 65 entries; a transform "
                                                      "parameter takes at most 64"),
        ("{fill: 2024-01-01}", "train.augment.0.Affine.fill: date values are not transform parameters; use "
                               "numbers, true/false, strings, null, or lists and mappings of them"),
        ("{fill: !!binary aGk=}", "train.augment.0.Affine.fill: bytes values are not transform parameters"),
        ("{fill: !!set {a}}", "train.augment.0.Affine.fill: set values are not transform parameters"),
        ("{fill: {1: 2}}", "train.augment.0.Affine.fill: key 1 is not a string"),
        ("{fill: " + "x" * 300 + "}", "train.augment.0.Affine.fill: a string of 300 characters"),
    ],
)
def test_augment_parameters_outside_the_schema_are_refused_with_their_key_path(params, expected):
    result = invoke("data", SMOKE, "--set", f"train.augment=[{{Affine: {params}}}]", "--dry-run")
    assert_one_line(result, 2, f"{SMOKE}: {expected}")


def test_augment_parameters_albumentations_needs_are_accepted(tmp_path):
    augment = [{"Affine": {"translate_px": {"x": [-1, 1], "y": [-1, 1]}, "scale": [0.9, 1.1], "rotate": 5,
                           "fit_output": False, "border_mode": 0, "fill": None, "p": 0.5}},
               {"HorizontalFlip": None}, {"Normalize": {"mean": [0.5], "std": [0.5], "max_pixel_value": 255.0}}]
    python_api = [{"Normalize": {"mean": (0.5,), "std": (0.5,)}}]  # tuples, as albumentations' docs write them
    assert validate_recipe({"train": {"augment": python_api}}).train.augment == python_api
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"train": {"augment": augment}}))
    result = invoke("data", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout.split("# run directory")[0])["train"]["augment"] == augment


def test_too_many_augment_transforms_are_refused():
    result = invoke("data", SMOKE, "--set", "train.augment=[" + ", ".join(["{HorizontalFlip: null}"] * 65) + "]",
                    "--dry-run")
    assert_one_line(result, 2, "train.augment: List should have at most 64 items")


def test_legitimate_values_stay_valid():
    recipe = validate_recipe({"generate": {"guidance": 20.0, "quota": {"ratio": 10.0}},
                              "train": {"lr": 1.0, "max_minutes": 60 * 24 * 7},
                              "model": {"block_out_channels": [8], "attention": [False]}})
    assert recipe.generate.guidance == 20.0 and recipe.model.block_out_channels == [8]


# --------------------------------------------------------------------------------------------- compute


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("compute.accelerator=cdua", "compute.accelerator: unknown accelerator 'cdua'; did you mean cuda?; "
                                     "choose one of auto, gpu, cpu, cuda"),
        ("compute.strategy=dpp", "compute.strategy: unknown strategy 'dpp'; did you mean ddp?; choose one of auto, "),
        ("compute.precision=bf17-mixed", "compute.precision: unknown precision 'bf17-mixed'; did you mean "
                                         "bf16-mixed?; choose one of "),
        ("compute.devices=0", "compute.devices: 0 is not a device count; give a number of devices (e.g. 2; -1 = all), "
                              "auto, or a list of distinct device ids like [0, 1]"),
        ("compute.devices=[0, 0]", "compute.devices: [0, 0] is not a device count"),
        ("compute.devices=two", "compute.devices: 'two' is not a device count"),
        ("compute.devices=true", "compute.devices: True is not a device count"),
    ],
)
def test_compute_settings_lightning_refuses_are_refused_before_writing(tmp_path, setting, expected):
    run = tmp_path / "new-run"
    result = invoke("train", SMOKE, "--set", setting, "--out", run)
    assert_one_line(result, 2, f"{SMOKE}: {expected}")
    assert not run.exists(), "no run folder, no recipe.yaml"


def test_every_compute_choice_lightning_offers_is_valid():
    from synthaug.config import lightning_choices

    for key in ("accelerator", "strategy", "precision"):
        for value in lightning_choices(key):
            assert getattr(validate_recipe({"compute": {key: value}}).compute, key) == value
    compute = validate_recipe({"compute": {"strategy": "DDP", "precision": 32, "devices": [0, 1]}}).compute
    assert (compute.strategy, compute.precision, compute.devices) == ("DDP", "32", [0, 1])
    for devices in ("auto", -1, 4):
        assert validate_recipe({"compute": {"devices": devices}}).compute.devices == devices


# --------------------------------------------------------------------------------------------- --out


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", SMOKE, "--out", out)
    assert_one_line(result, 2, f"--out {out!r} is empty; give a run directory, e.g. --out runs/my-run")
    assert list(tmp_path.iterdir()) == [], "nothing written, not even runs/smoke"

