"""Recipes with exactly one field wrong, derived from the shipped ones by walking the dict.

Nothing here knows a recipe's shape: mappings are found by walking, and bounds, choices and
required fields come from the stage configs' pydantic models, so a recipe refactor (a `train:`
block, say) changes nothing here. Broken YAML is made by editing the dumped text.
"""

from __future__ import annotations

import copy
import random
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from llmopt.testing.bad_inputs import Case, dump_yaml

# (recipe dict, rng) -> (YAML text, the key or id the error must name, or the line of broken YAML), or
# None where the mutation does not apply to this recipe
RecipeMutation = Callable[[dict, random.Random], tuple[str, str | int] | None]


def _mappings(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every mapping in the recipe with its path, outermost first."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _mappings(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _mappings(v, path + (i,))


def _model_at(raw: dict, path: tuple) -> Any:
    """The pydantic model that validates the mapping at `path` (None where none does)."""
    from llmopt.recipe import Recipe
    from llmopt.stages import STAGES

    if not path:
        return Recipe
    if path[0] != "stages" or len(path) < 2:
        return None
    node = raw["stages"][path[1]]
    spec = STAGES.get(node.get("type"))
    cls = spec.config if spec else None
    for key in path[2:]:
        node = node[key]
        info = cls.model_fields.get(key) if cls is not None else None
        models = _models_in(info.annotation) if info else []
        # a union of models (source: builtin | files): the one whose fields hold the mapping's keys
        cls = next((m for m in models if isinstance(node, dict) and set(node) <= set(m.model_fields)),
                   models[0] if models else None)
    return cls


def _models_in(ann: Any) -> list[type]:
    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in typing.get_args(ann) for m in _models_in(a)]


def _fields(raw: dict, path: tuple) -> dict:
    cls = _model_at(raw, path)
    return dict(cls.model_fields) if cls is not None else {}


def _typo(word: str, rng: random.Random, taken: set) -> str:
    for _ in range(50):
        i = rng.randrange(len(word))
        new = rng.choice([word[:i] + word[i + 1:], word[:i] + word[i] + word[i:], word + "s",
                          word[:i] + word[i + 1:i + 2] + word[i] + word[i + 2:]])
        if new != word and new not in taken and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", new):
            return new
    return word + "_extra"


def _unknown_key(where: Callable[[tuple], bool]) -> RecipeMutation:
    def mutate(raw: dict, rng: random.Random) -> tuple[str, str] | None:
        spots = [(p, m) for p, m in _mappings(raw) if where(p) and m]
        if not spots:
            return None
        path, m = rng.choice(spots)
        key = rng.choice(list(m))
        new = _typo(str(key), rng, set(map(str, m)) | set(_fields(raw, path)))
        if rng.random() < 0.5:  # a typo in place of the key, or a second key beside it
            items = list(m.items())
            m.clear()
            m.update((new if k == key else k, v) for k, v in items)
        else:
            m[new] = copy.deepcopy(m[key])
        return dump_yaml(raw), new
    return mutate


def _leaves(raw: dict) -> list[tuple[tuple, str, Any]]:
    return [(p, k, v) for p, m in _mappings(raw) for k, v in m.items() if v is not None and not isinstance(v, dict)]


def _wrong_type(raw: dict, rng: random.Random) -> tuple[str, str]:
    path, key, value = rng.choice([s for s in _leaves(raw) if s[1] != "type"] + _nested(raw))
    if isinstance(value, bool):
        bad = rng.choice(["maybe", [value]])
    elif isinstance(value, (int, float)):
        bad = rng.choice(["fast", [value]])
    elif isinstance(value, str):
        bad = rng.choice([7, [value]])
    else:  # a list or a mapping
        bad = rng.choice([7, "fast"] if isinstance(value, list) else [7, [1, 2]])
    _get(raw, path)[key] = bad
    return dump_yaml(raw), str(key)


def _nested(raw: dict) -> list[tuple[tuple, str, Any]]:
    return [(p[:-1], p[-1], m) for p, m in _mappings(raw) if len(p) > 2]


def _get(raw: dict, path: tuple) -> Any:
    for part in path:
        raw = raw[part]
    return raw


def _out_of_range(raw: dict, rng: random.Random) -> tuple[str, str] | None:
    spots = []
    for path, key, value in _leaves(raw):
        info = _fields(raw, path).get(key)
        bad = _outside(info, value, rng) if info is not None else []
        spots += [(path, key, b) for b in bad]
    if not spots:
        return None
    path, key, bad = rng.choice(spots)
    _get(raw, path)[key] = bad
    return dump_yaml(raw), str(key)


def _outside(info: Any, value: Any, rng: random.Random) -> list:
    """Values that break the field's bounds, choices or pattern."""
    out = []
    for m in info.metadata:
        for attr, step in (("gt", 0), ("ge", -1), ("lt", 0), ("le", 1)):
            bound = getattr(m, attr, None)
            if isinstance(bound, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(bound + step)
        if getattr(m, "pattern", None) and isinstance(value, str):
            out.append(f"{value} 2")
    choices = _literals(info.annotation)
    if choices and isinstance(value, str) and value in choices:
        out.append(_typo(value, rng, set(choices)))
    return out


def _literals(ann: Any) -> list:
    if typing.get_origin(ann) is typing.Literal:
        return list(typing.get_args(ann))
    return [a for arg in typing.get_args(ann) for a in _literals(arg)]


REF_KEYS = ("data", "teacher", "model", "models", "reference", "student_model")


def _reference(pick: Callable[[list[str], int, random.Random], str | None]) -> RecipeMutation:
    """Point one stage reference (`data:`, `teacher:`, `model:`, one of `models:`) at the id `pick` chooses."""
    def mutate(raw: dict, rng: random.Random) -> tuple[str, str] | None:
        stages = raw.get("stages") or []
        ids = [str(s.get("id")) for s in stages]
        spots = [(i, k) for i, s in enumerate(stages) for k in REF_KEYS
                 if k in _fields(raw, ("stages", i)) and (k in s or k == "data")]
        spots = [(i, k, pick(ids, i, rng)) for i, k in spots]
        spots = [s for s in spots if s[2] is not None]
        if not spots:
            return None
        i, key, ref = rng.choice(spots)
        old = stages[i].get(key)
        if isinstance(old, list) and old:
            old[rng.randrange(len(old))] = ref
        else:
            stages[i][key] = ref
        return dump_yaml(raw), ref
    return mutate


def _unknown_stage_type(raw: dict, rng: random.Random) -> tuple[str, str]:
    from llmopt.stages import STAGES

    st = rng.choice(raw["stages"])
    st["type"] = _typo(str(st["type"]), rng, set(STAGES))
    return dump_yaml(raw), st["type"]


def _duplicate_id(raw: dict, rng: random.Random) -> tuple[str, str]:
    i, j = sorted(rng.sample(range(len(raw["stages"])), 2))
    raw["stages"][j]["id"] = raw["stages"][i]["id"]
    return dump_yaml(raw), raw["stages"][i]["id"]


def _missing_key(raw: dict, rng: random.Random) -> tuple[str, str]:
    spots = [(i, k) for i, s in enumerate(raw["stages"]) for k, f in _fields(raw, ("stages", i)).items()
             if k in s and (k in ("id", "type") or f.is_required())]
    i, key = rng.choice(spots)
    del raw["stages"][i][key]
    return dump_yaml(raw), key


def _yaml_edit(fits: Callable[[str, str], Any], edit: Callable[[str], str]) -> RecipeMutation:
    """Break the YAML text: `edit` one line that `fits` (given the line before it and the line); the error names it."""
    def mutate(raw: dict, rng: random.Random) -> tuple[str, int] | None:
        lines = dump_yaml(raw).splitlines()
        spots = [i for i in range(1, len(lines)) if fits(lines[i - 1], lines[i])]
        if not spots:
            return None
        i = rng.choice(spots)
        lines[i] = edit(lines[i])
        return "\n".join(lines) + "\n", i + 1
    return mutate


def _after_plain_value(before: str, line: str) -> bool:
    """`line` is a key at the same column as the `key: plain value` line before it."""
    a, b = re.match(r"( *(?:- )?)\w+: [\w.-]+$", before), re.match(r"( *)\w+:", line)
    return bool(a and b and len(a[1]) == len(b[1]))


def _unclose(line: str) -> str:
    i = max(line.rfind("]"), line.rfind("}"))
    return line[:i] + line[i + 1:]


RECIPE_MUTATIONS: dict[str, RecipeMutation] = {
    "unknown_top_key": _unknown_key(lambda p: p == ()),
    "unknown_stage_key": _unknown_key(lambda p: len(p) == 2 and p[0] == "stages"),
    "unknown_nested_key": _unknown_key(lambda p: len(p) > 2 and p[0] == "stages"),
    "wrong_type": _wrong_type,
    "out_of_range": _out_of_range,
    "unknown_ref": _reference(lambda ids, i, rng: _typo(rng.choice(ids), rng, set(ids))),
    "forward_ref": _reference(lambda ids, i, rng: rng.choice(ids[i + 1:]) if i + 1 < len(ids) else None),
    "self_ref": _reference(lambda ids, i, rng: ids[i]),
    "unknown_stage_type": _unknown_stage_type,
    "duplicate_id": _duplicate_id,
    "missing_key": _missing_key,
    "yaml_bad_indent": _yaml_edit(_after_plain_value, lambda s: "   " + s),  # reads as a key inside the value
    "yaml_tab": _yaml_edit(lambda before, s: s.startswith(" "), lambda s: "\t" + s.lstrip(" ")),
    "yaml_unclosed_bracket": _yaml_edit(lambda before, s: re.search(r"[\[{].*[\]}]", s), _unclose),
}


def recipe_cases(recipes: list[Path], root: Path, n: int | None = None, seed: int = 0) -> list[Case]:
    """n recipe cases cycling through the mutations and the recipes (n None: each mutation once)."""
    rng = random.Random(seed)
    kinds = list(RECIPE_MUTATIONS)
    folder = Path(root) / "recipe"
    folder.mkdir(parents=True)
    cases = []
    for i in range(n or len(kinds)):
        kind = kinds[i % len(kinds)]
        for src in recipes[i % len(recipes):] + recipes[: i % len(recipes)]:  # the first one it applies to
            done = RECIPE_MUTATIONS[kind](yaml.safe_load(src.read_text(encoding="utf-8")), rng)
            if done is not None:
                break
        else:
            raise ValueError(f"mutation {kind} applies to none of {recipes}")
        text, culprit = done  # the key or id the error must name, or the line of broken YAML
        p = folder / f"{i}-{kind}-{src.stem}.yaml"
        p.write_text(text, encoding="utf-8")
        if isinstance(culprit, int):  # that line, as file:line or as "line n" beside where the parser gave up
            expect = (re.escape(str(p)) + r":\d+", rf"(?:{re.escape(str(p))}:|line ){culprit}(?!\d)")
        else:
            expect = (re.escape(str(p)) + r":\d+", re.escape(culprit))
        cases.append(Case("recipe", kind, p, expect, command="validate"))
    return cases


