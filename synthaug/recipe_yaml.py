"""Reading recipe YAML: a bounded safe loader, recipe files, and ``--set KEY=VALUE`` overrides.

Everything here returns plain YAML values; ``synthaug.config`` validates them into a ``Recipe``. The
bounds refuse hostile input (alias bombs, deep nesting, endless files) while parsing, before anything
walks the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from synthaug.errors import SynthaugError, shorten

# A recipe is a few hundred values; these bounds refuse hostile YAML (an alias "billion laughs" bomb
# that expands to 10^9 values, 50,000 nested brackets) before anything walks it, while leaving room for
# generate.quota.counts over tens of thousands of classes.
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 200_000
MAX_YAML_ALIASES = 100


class YAMLTooLarge(yaml.YAMLError):
    """YAML over the bounds above; its message says which bound and how to fix it."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``3e-4`` as a float (YAML 1.1 wants ``3.0e-4``) and enforces the bounds.

    The composer recurses once per nesting level, so depth is counted there, before Python's recursion
    limit. Aliases share one node, so a bomb is small as nodes; its expanded size is counted on the node
    graph (each shared node once) before the constructor builds anything.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise YAMLTooLarge(f"more than {MAX_YAML_ALIASES} YAML aliases (*name){_at(self.peek_event())}; "
                                   "write the values out instead")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLTooLarge(_too_deep(self.peek_event()))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _count_expanded(node)
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _at(event_or_node) -> str:
    mark = event_or_node.start_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _too_deep(where) -> str:
    return (f"YAML nested deeper than {MAX_YAML_DEPTH} levels{_at(where)}; "
            "a recipe needs a few levels, remove the extra nesting")


def _count_expanded(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand beyond the bounds: too many values, too deep, or a loop."""
    known: dict[int, tuple[int, int]] = {}  # id(node) → (values when expanded, levels)
    open_: set[int] = set()

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        if depth > MAX_YAML_DEPTH:
            raise YAMLTooLarge(_too_deep(node))
        if id(node) in known:
            values, levels = known[id(node)]
            if depth + levels - 1 > MAX_YAML_DEPTH:
                raise YAMLTooLarge(_too_deep(node))
            return values, levels
        if id(node) in open_:
            raise YAMLTooLarge(f"a YAML alias refers to its own anchor{_at(node)}; a recipe cannot contain itself")
        open_.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        values, levels = 1, 1
        for child in children:
            v, lv = visit(child, depth + 1)
            values, levels = values + v, max(levels, lv + 1)
            if values > MAX_YAML_VALUES:
                raise YAMLTooLarge(f"the YAML expands to more than {MAX_YAML_VALUES:,} values{_at(node)} "
                                   "(each *alias repeats its anchor's values); write a smaller recipe")
        open_.discard(id(node))
        known[id(node)] = (values, levels)
        return values, levels

    if root is not None:
        visit(root, 1)


def yaml_load(text: str) -> Any:
    """Parse recipe YAML safely (no Python tags) within the bounds above; raises ``yaml.YAMLError``."""
    if len(text) > MAX_RECIPE_BYTES:
        raise YAMLTooLarge(f"{len(text):,} characters of YAML, over the {MAX_RECIPE_BYTES:,} a recipe may have; "
                           "shorten it")
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise SynthaugError(f"--set {shorten(text)}: expected KEY=VALUE, e.g. --set train.max_steps=500")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise SynthaugError(f"--set {shorten(text)}: {shorten(key)} is not a dotted key path like train.lr")
    try:
        parsed = yaml_load(value) if value.strip() else None
    except YAMLTooLarge as exc:
        raise SynthaugError(f"--set {shorten(text)}: {exc}") from None
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise SynthaugError(f"--set {shorten(text)}: the value is not valid YAML ({problem})") from None
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SynthaugError(
                    f"--set {shorten(text)}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:  # at most one byte over the bound: /dev/zero has no size to check first
            data = file.read(MAX_RECIPE_BYTES + 1)
        if len(data) > MAX_RECIPE_BYTES:
            raise SynthaugError(f"{path}: over {MAX_RECIPE_BYTES:,} bytes, too large for a recipe; "
                                "pass a recipe file or a run directory")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SynthaugError(f"{path}: no such recipe file or run directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthaugError(f"{path}: cannot read the recipe ({exc.__class__.__name__}: {exc})") from None
    try:
        raw = yaml_load(text)
    except YAMLTooLarge as exc:
        raise SynthaugError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SynthaugError(f"{path}: not valid YAML{where} ({problem}); fix the file's syntax") from None
    return raw if raw is not None else {}
