"""Recipe validation, ``--set`` overrides, loading from files and run directories (DESIGN §3, §6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from synthaug.config import RECIPE_FILE, Recipe, load_recipe, save_recipe, validate_recipe
from synthaug.errors import SynthaugError, did_you_mean, shorten
from synthaug.recipe_yaml import parse_override


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def error_of(raw: dict) -> str:
    with pytest.raises(SynthaugError) as info:
        validate_recipe(raw)
    return str(info.value)


# --------------------------------------------------------------------------------------------- defaults


def test_recipe_of_only_data_source_is_valid_and_takes_the_documented_defaults(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"data": {"source": "imagefolder:some/dir"}})
    recipe = load_recipe(path)
    assert recipe.data.source == "imagefolder:some/dir"
    # A sample of DESIGN §3's defaults.
    assert recipe.seed == 0
    assert recipe.data.image_size == 16 and recipe.data.channels == 1
    assert recipe.data.test_fraction == 0.25
    assert recipe.data.subset.per_class is None and recipe.data.subset.imbalance is None
    assert recipe.model.block_out_channels == [32, 64, 64]
    assert recipe.model.attention == [False, False, True]
    assert recipe.train.max_steps == 3000 and recipe.train.lr == 1.0e-3
    assert recipe.generate.quota.balance == "max" and recipe.generate.quota.per_class is None
    assert recipe.generate.sampler == "dpmpp" and recipe.generate.formats == ["hf"]
    assert recipe.evaluate.seeds == [0, 1, 2, 3, 4] and recipe.evaluate.steps == "auto"
    assert recipe.run_dir == Path("runs") / recipe.name


def test_empty_recipe_file_is_all_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_recipe(path).to_dict() == Recipe().to_dict()


def test_tiny_recipe_fixture_is_valid(tiny_recipe, tmp_path):
    recipe = validate_recipe(tiny_recipe)
    assert recipe.run_dir == tmp_path / "run"
    assert recipe.generate.quota.per_class == 3 and recipe.generate.quota.balance is None


# --------------------------------------------------------------------------------------------- bad recipes


def test_unknown_nested_key_names_the_path_and_the_closest_key():
    message = error_of({"data": {"imagesize": 32}})
    assert "data.imagesize: unknown key; did you mean data.image_size?" in message


def test_unknown_nested_key_misspelt_max_steps():
    message = error_of({"train": {"max_step": 10}})
    assert "train.max_step: unknown key; did you mean train.max_steps?" in message


def test_unknown_key_without_a_close_match_lists_the_valid_keys():
    message = error_of({"data": {"zzzzzz": 1}})
    assert "data.zzzzzz: unknown key" in message
    assert "image_size" in message and "test_fraction" in message


def test_unknown_top_level_key_from_a_file_names_the_file_and_the_closest_key(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"dat": {"source": "builtin:digits"}})
    with pytest.raises(SynthaugError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    assert "dat: unknown key; did you mean data?" in message


def test_did_you_mean_names_the_closest_choice_in_the_two_shapes_messages_use():
    assert did_you_mean("max_stesp", ["lr", "max_steps", "max_minutes"]) == "; did you mean max_steps?"
    assert did_you_mean("max_stesp", ["lr", "max_steps"], prefix="train.") == "; did you mean train.max_steps?"
    # Class names are the user's own words, quoted so one with a ';' or spaces reads as one name.
    assert did_you_mean("hot dg", ["hot dog", "cat"], quoted=True) == " (did you mean 'hot dog'?)"
    assert did_you_mean("zzzz", ["lr", "max_steps"]) == ""
    assert did_you_mean("anything", []) == ""


def test_did_you_mean_cutoff_decides_how_far_a_match_may_be():
    # Half the letters in common: close at the recipe keys' cutoff (0.5), not at difflib's (0.6).
    assert did_you_mean("abcd", ["abxy"]) == ""
    assert did_you_mean("abcd", ["abxy"], cutoff=0.5) == "; did you mean abxy?"


def test_shorten_keeps_a_long_value_to_one_readable_line():
    assert shorten("train.lr") == "'train.lr'"
    long = shorten("n" * 1000)
    assert len(long) == 80 and long.startswith("'nnn") and long.endswith("nnn'") and "…" in long


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"max_steps": "many"}}, "train.max_steps"),
        ({"data": {"channels": 2}}, "data.channels"),
        ({"generate": {"sampler": "dpm++"}}, "generate.sampler"),
        ({"model": {"block_out_channels": "wide"}}, "model.block_out_channels"),
    ],
)
def test_wrong_type_names_the_key_and_the_value(raw, path):
    message = error_of(raw)
    assert message.startswith(f"recipe: {path}:")
    section, key = path.split(".")
    assert repr(raw[section][key]) in message


@pytest.mark.parametrize(
    ("raw", "path", "value"),
    [
        ({"generate": {"quota": {"per_class": -1}}}, "generate.quota.per_class", "-1"),
        ({"data": {"test_fraction": 1.5}}, "data.test_fraction", "1.5"),
        ({"data": {"test_fraction": 0}}, "data.test_fraction", "0"),
        ({"data": {"subset": {"per_class": 0}}}, "data.subset.per_class", "0"),
        ({"data": {"subset": {"imbalance": 0.5}}}, "data.subset.imbalance", "0.5"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay", "1.0"),
        ({"seed": -3}, "seed", "-3"),
        ({"model": {"sample_size": 2}}, "model.sample_size", "2"),
        ({"generate": {"filter": {"min_novelty": 1.0}}}, "generate.filter.min_novelty", "1.0"),
    ],
)
def test_out_of_range_value_names_the_key_and_the_value(raw, path, value):
    message = error_of(raw)
    assert f"{path}:" in message
    assert f"(got {value})" in message


def test_quota_with_two_kinds_is_an_error_naming_both():
    message = error_of({"generate": {"quota": {"per_class": 3, "total": 10}}})
    assert "generate.quota" in message and "exactly one" in message
    assert "per_class, total" in message


def test_quota_with_no_kind_is_an_error():
    message = error_of({"generate": {"quota": {}}})
    assert "exactly one" in message and "got none" in message


def test_quota_counts_must_be_non_negative():
    assert "non-negative" in error_of({"generate": {"quota": {"counts": {"cat": -2}}}})


def test_attention_flags_must_match_blocks():
    message = error_of({"model": {"attention": [False, True]}})
    assert "model.attention has 2 entries" in message and "block_out_channels has 3" in message


@pytest.mark.parametrize("source", ["s3:bucket/data", "digits", "file:/tmp/x"])
def test_unknown_source_scheme_lists_the_schemes(source):
    message = error_of({"data": {"source": source}})
    assert "data.source" in message and repr(source) in message
    for scheme in ("builtin:", "imagefolder:", "hf:", "csv:"):
        assert scheme in message


def test_unknown_test_source_scheme_is_an_error_too():
    assert "data.test_source" in error_of({"data": {"test_source": "ftp:x"}})


def test_several_problems_report_the_first_and_count_the_rest():
    message = error_of({"data": {"image_size": 2}, "train": {"lr": -1}})
    assert "data.image_size" in message and "(and 1 more problem)" in message


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_recipe_name_must_be_a_plain_name(name):
    assert "name" in error_of({"name": name})


def test_recipe_that_is_not_a_mapping_is_an_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- data\n- train\n", encoding="utf-8")
    with pytest.raises(SynthaugError, match="mapping"):
        load_recipe(path)


def test_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata:\n  source: builtin:digits\n image_size: 8\n", encoding="utf-8")
    with pytest.raises(SynthaugError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid YAML" in message and "line 4" in message


def test_missing_recipe_file_is_a_synthaug_error(tmp_path):
    with pytest.raises(SynthaugError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------------------------- --set overrides


def test_override_to_null(tmp_path, tiny_recipe):
    path = write_yaml(tmp_path / "r.yaml", tiny_recipe)
    assert load_recipe(path).data.subset.per_class == 20
    recipe = load_recipe(path, overrides=["data.subset.per_class=null"])
    assert recipe.data.subset.per_class is None


def test_override_float_in_exponent_notation_is_a_float(tmp_path, tiny_recipe):
    path = write_yaml(tmp_path / "r.yaml", tiny_recipe)
    recipe = load_recipe(path, overrides=["train.lr=3e-4"])
    assert isinstance(recipe.train.lr, float)
    assert recipe.train.lr == pytest.approx(3e-4)
    assert recipe.to_dict()["train"]["lr"] == pytest.approx(3e-4)


def test_override_values_are_typed_as_yaml():
    assert parse_override("train.max_steps=500") == (["train", "max_steps"], 500)
    assert parse_override("data.subset.per_class=null") == (["data", "subset", "per_class"], None)
    assert parse_override("evaluate.flips=true") == (["evaluate", "flips"], True)
    assert parse_override("name=a=b") == (["name"], "a=b")  # only the first '=' splits
    assert parse_override("model.attention=[false, true]") == (["model", "attention"], [False, True])


def test_override_replaces_the_whole_quota(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"generate": {"quota": {"balance": "max"}}})
    recipe = load_recipe(path, overrides=["generate.quota={per_class: 300}"])
    assert recipe.generate.quota.per_class == 300
    assert recipe.generate.quota.balance is None


def test_override_of_one_quota_kind_on_top_of_another_is_an_error(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"generate": {"quota": {"balance": "max"}}})
    with pytest.raises(SynthaugError, match="exactly one"):
        load_recipe(path, overrides=["generate.quota.per_class=300"])


def test_override_lists_replace_lists(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"data": {"source": "builtin:digits"}})
    recipe = load_recipe(
        path, overrides=["model.block_out_channels=[8, 16]", "model.attention=[false, true]"]
    )
    assert recipe.model.block_out_channels == [8, 16]
    assert recipe.model.attention == [False, True]


def test_override_creates_missing_sections(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"data": {"source": "builtin:digits"}})
    recipe = load_recipe(path, overrides=["data.subset.imbalance=10", "evaluate.seeds=[4]"])
    assert recipe.data.subset.imbalance == 10.0
    assert recipe.evaluate.seeds == [4]


def test_later_override_wins(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {})
    assert load_recipe(path, overrides=["seed=1", "seed=2"]).seed == 2


def test_override_of_an_unknown_key_suggests_the_closest(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {})
    with pytest.raises(SynthaugError, match="max_stesp: unknown key; did you mean"):
        load_recipe(path, overrides=["train.max_stesp=5"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.lr", "expected KEY=VALUE"),
        ("train..lr=3", "not a dotted key path"),
        ("=3", "not a dotted key path"),
        ("model.attention=[false, true", "not valid YAML"),
        ("generate.quota={per_class: 3", "not valid YAML"),
    ],
)
def test_bad_override_syntax(text, expected):
    with pytest.raises(SynthaugError) as info:
        parse_override(text)
    assert expected in str(info.value)
    assert repr(text) in str(info.value)


def test_override_below_a_value_is_an_error(tmp_path):
    path = write_yaml(tmp_path / "r.yaml", {"seed": 3})
    with pytest.raises(SynthaugError, match="seed is a value, not a section"):
        load_recipe(path, overrides=["seed.x=1"])


# --------------------------------------------------------------------------------------------- run dirs, save, digest


def test_load_from_run_dir_uses_that_dir_as_output_dir(tmp_path, tiny_recipe):
    recipe = validate_recipe(tiny_recipe)
    moved = tmp_path / "moved" / "run"
    save_recipe(recipe, moved)
    assert (moved / RECIPE_FILE).is_file()
    loaded = load_recipe(moved)
    assert loaded.output_dir == str(moved)
    assert loaded.run_dir == moved
    assert loaded.train.max_steps == 20


def test_overrides_apply_on_top_of_a_run_dir(tmp_path, tiny_recipe):
    run_dir = tmp_path / "run"
    save_recipe(validate_recipe(tiny_recipe), run_dir)
    loaded = load_recipe(run_dir, overrides=["generate.quota={per_class: 500}"])
    assert loaded.generate.quota.per_class == 500
    assert loaded.data.subset.per_class == 20


def test_out_argument_sets_output_dir(tmp_path, tiny_recipe):
    path = write_yaml(tmp_path / "r.yaml", tiny_recipe)
    assert load_recipe(path, out=tmp_path / "elsewhere").run_dir == tmp_path / "elsewhere"


def test_dir_without_recipe_is_an_error(tmp_path):
    with pytest.raises(SynthaugError, match=RECIPE_FILE):
        load_recipe(tmp_path)


def test_save_recipe_round_trip(tmp_path, tiny_recipe):
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", tiny_recipe), overrides=["train.lr=3e-4"])
    saved = save_recipe(recipe, tmp_path / "run")
    assert saved == tmp_path / "run" / RECIPE_FILE
    again = load_recipe(saved)  # a file path: output_dir kept as written
    assert again.to_dict() == recipe.to_dict()
    assert again == recipe
    # The saved recipe is fully resolved: every section is written out.
    written = yaml.safe_load(saved.read_text(encoding="utf-8"))
    assert set(written) == set(Recipe.model_fields)
    assert written["generate"]["quota"] == {
        "balance": None,
        "per_class": 3,
        "total": None,
        "ratio": None,
        "counts": None,
    }


def test_digest_is_stable_and_sensitive(tmp_path, tiny_recipe):
    recipe = validate_recipe(tiny_recipe)
    digest = recipe.digest()
    assert len(digest) == 12 and all(c in "0123456789abcdef" for c in digest)
    # The same recipe written with keys in another order, and after a save/load round trip.
    reordered = dict(reversed(list(tiny_recipe.items())))
    assert validate_recipe(reordered).digest() == digest
    assert load_recipe(save_recipe(recipe, tmp_path / "run")).digest() == digest
    # Defaults spelled out or left implicit are the same recipe.
    explicit = {**tiny_recipe, "compute": {"accelerator": "auto"}}
    assert validate_recipe(explicit).digest() == digest
    # Any change of value changes it.
    assert validate_recipe({**tiny_recipe, "seed": 1}).digest() != digest
    changed = load_recipe(write_yaml(tmp_path / "r.yaml", tiny_recipe), overrides=["generate.steps=5"])
    assert changed.digest() != digest


@pytest.mark.parametrize("model, fragment", [
    ({"lora": {"rank": 4}}, "lora does not apply to backbone pixel"),
    ({"prompt": "a {name}"}, "prompt does not apply to backbone pixel"),
    ({"backbone": "latent-text"}, "needs a base"),
    ({"backbone": "latent-text", "base": "b", "block_out_channels": [8]}, "block_out_channels does not apply"),
    ({"backbone": "latent-text", "base": "b", "prompt": "a photo"}, "has no {name}"),
    ({"backbone": "latent-text", "base": "b", "class_prompts": {"cat": "cat"}}, "model.class_prompts.cat"),
])
def test_backbone_keys_are_checked(model, fragment):
    with pytest.raises(SynthaugError, match=re.escape(fragment)):
        validate_recipe({"model": model})


def test_a_saved_latent_text_recipe_loads_again(tmp_path):
    """recipe.yaml lists every key, the other backbone's at their defaults: that is no conflict."""
    recipe = validate_recipe({"model": {"backbone": "latent-text", "base": "b"}, "output_dir": str(tmp_path)})
    save_recipe(recipe, tmp_path)
    assert load_recipe(tmp_path).model.backbone == "latent-text"
