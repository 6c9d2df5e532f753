"""``synthaug schema``: the recipe's JSON Schema, from the pydantic models, checks every shipped recipe and
refuses what the recipe loader refuses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import invoke

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
SHIPPED_SCHEMA = RECIPES[0].parent / "recipe.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_key_has_a_description(schema: dict):
    sections = [schema, *schema["$defs"].values()]
    missing = [f"{s.get('title')}.{k}" for s in sections for k, v in s.get("properties", {}).items()
               if not v.get("description")]
    assert not missing, f"keys without a description: {missing}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_points_editors_at_the_schema(schema: dict, path: Path):
    text = path.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=recipe.schema.json"
    jsonschema.validate(yaml.safe_load(text), schema)


def test_an_unknown_key_or_a_bad_value_is_rejected(schema: dict):
    recipe = yaml.safe_load(RECIPES[0].read_text())
    with pytest.raises(jsonschema.ValidationError, match="batch_sise"):
        jsonschema.validate({**recipe, "train": {**recipe.get("train", {}), "batch_sise": 8}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="color"):
        jsonschema.validate({**recipe, "color": "red"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**recipe, "generate": {"sampler": "fastest"}}, schema)


def test_the_shipped_schema_file_is_the_current_one(schema: dict):
    assert json.loads(SHIPPED_SCHEMA.read_text()) == schema, (
        "recipes/recipe.schema.json is stale: run `synthaug schema > recipes/recipe.schema.json`")
