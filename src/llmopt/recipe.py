"""YAML recipe → typed Recipe: overrides, validation with did-you-mean, resolved dump."""

from __future__ import annotations

import copy
import re
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from llmopt.errors import ModelError, RecipeError, did_you_mean
from llmopt.models import check_model_dir
from llmopt.stages import STAGES
from llmopt.stages.base import StageConfig, Strict

TOP_KEYS = ("version", "name", "seed", "threads", "stages")
# key paths set by command-line overrides → the override text: a problem there is blamed on the override
_OVERRIDDEN: ContextVar[dict[tuple, str]] = ContextVar("_OVERRIDDEN", default={})


class Recipe(Strict):
    version: int = Field(1, ge=1, le=1)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 42
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; default: all cores")
    stages: list[StageConfig]

    def stage(self, stage_id: str) -> StageConfig:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in, as plain data."""
        out = {k: getattr(self, k) for k in ("version", "name", "seed", "threads")}
        out["stages"] = [s.model_dump(mode="json") for s in self.stages]
        return out

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False, allow_unicode=True)


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_paths: bool = True,
                allow_pickle: bool = False) -> Recipe:
    """Read, override and validate a recipe file; every problem is a RecipeError."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found. Give the path to a YAML recipe (see recipes/).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start}). Save the recipe as UTF-8.") from None
    return parse_recipe(text, source=str(path), overrides=overrides, check_paths=check_paths, allow_pickle=allow_pickle)


def parse_recipe(
    text: str,
    source: str = "<recipe>",
    overrides: list[str] | None = None,
    check_paths: bool = True,
    allow_pickle: bool = False,
) -> Recipe:
    """Parse YAML text into a validated Recipe; every problem is a RecipeError naming the line or key."""
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        ctx, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if ctx and cmark and mark and cmark.line != mark.line:  # an unclosed quote or bracket: where it opened
            problem += f"; {ctx} that starts at line {cmark.line + 1}"
        raise RecipeError(f"{where}: invalid YAML ({problem}). Fix the syntax at that line.") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with keys {', '.join(TOP_KEYS)}.")
    overridden: dict[tuple, str] = {}
    raw = apply_overrides(raw, overrides or [], source, overridden)
    token = _OVERRIDDEN.set(overridden)
    try:
        recipe = _validate(raw, root, source)
        _check_references(recipe, source, root)
        if check_paths:
            _check_paths(recipe, source, root, allow_pickle)
    finally:
        _OVERRIDDEN.reset(token)
    return recipe


def apply_overrides(raw: dict, overrides: list[str], source: str, paths: dict[tuple, str] | None = None) -> dict:
    """Apply `key.path=value` strings (values parsed as YAML) to the raw recipe; `paths` gets each key path set."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override '{item}': expected key=value, e.g. stages.finetune.epochs=1")
        key, value_text = item.split("=", 1)
        try:
            value = yaml.safe_load(value_text) if value_text != "" else ""
        except yaml.YAMLError:
            value = value_text
        parts = key.strip().split(".")
        if parts[0] == "stages":
            if len(parts) < 3:
                raise RecipeError(f"override '{item}': use stages.<id>.<field>=value")
            stages = raw.get("stages") or []
            ids = [s.get("id") for s in stages if isinstance(s, dict)]
            if parts[1] not in ids:
                raise RecipeError(
                    f"override '{item}': {source} has no stage with id '{parts[1]}'"
                    f"{did_you_mean(parts[1], [i for i in ids if i])}. Stage ids: {', '.join(map(str, ids))}."
                )
            target: Any = stages[ids.index(parts[1])]
            path = parts[2:]
            full: tuple = ("stages", ids.index(parts[1]), *path)
        else:
            if parts[0] not in TOP_KEYS:
                raise RecipeError(
                    f"override '{item}': unknown key '{parts[0]}'{did_you_mean(parts[0], TOP_KEYS)}. "
                    f"Top-level keys: {', '.join(TOP_KEYS)}; stage fields: stages.<id>.<field>=value."
                )
            target, path, full = raw, parts, tuple(parts)
        if paths is not None:
            paths[full] = item
        for p in path[:-1]:
            nxt = target.get(p) if isinstance(target, dict) else None
            if not isinstance(nxt, dict):
                nxt = {}
                target[p] = nxt
            target = nxt
        target[path[-1]] = value
    return raw


def _validate(raw: dict, root: yaml.Node | None, source: str) -> Recipe:
    for key in raw:
        if key not in TOP_KEYS:
            raise RecipeError(
                f"{_where(source, root, [key])}: unknown key '{key}'{did_you_mean(str(key), TOP_KEYS)}. "
                f"Allowed top-level keys: {', '.join(TOP_KEYS)}."
            )
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise RecipeError(f"{_where(source, root, ['stages'])}: 'stages' must be a non-empty list of stages.")
    stages: list[StageConfig] = []
    seen: set[str] = set()
    for i, st in enumerate(stages_raw):
        if not isinstance(st, dict):
            raise RecipeError(f"{_where(source, root, ['stages', i])}: stage {i} must be a mapping with 'id' and 'type'.")
        st_type = st.get("type")
        if "type" not in st:
            typo = [k for k in st if did_you_mean(str(k), ["type"])]
            hint = f" ('{typo[0]}' looks like a typo of 'type')" if typo else ""
            raise RecipeError(
                f"{_where(source, root, ['stages', i, *(typo[:1] or [])])}: stages[{i}]: no `type:`{hint}. "
                f"Give each stage a type: {', '.join(STAGES)} (run `llmopt stages`)."
            )
        if st_type not in STAGES:
            raise RecipeError(
                f"{_where(source, root, ['stages', i, 'type'])}: stages[{i}].type: unknown stage type "
                f"'{st_type}'{did_you_mean(str(st_type), STAGES)}. Known types: {', '.join(STAGES)} "
                "(run `llmopt stages`)."
            )
        cls = STAGES[st_type].config
        try:
            cfg = cls.model_validate(st)
        except ValidationError as e:
            raise RecipeError(_format_validation(e, cls, source, root, ["stages", i], st.get("id"))) from None
        if cfg.id in seen:
            raise RecipeError(
                f"{_where(source, root, ['stages', i, 'id'])}: stages[{i}].id: duplicate stage id '{cfg.id}'. "
                "Give every stage a unique id."
            )
        seen.add(cfg.id)
        stages.append(cfg)
    top = {k: v for k, v in raw.items() if k != "stages"}
    try:
        return Recipe.model_validate({**top, "stages": stages})
    except ValidationError as e:
        raise RecipeError(_format_validation(e, Recipe, source, root, [], None)) from None


def _check_references(recipe: Recipe, source: str, root: yaml.Node | None) -> None:
    """Every StageRef names an earlier stage; a ModelRef that is a stage id names an earlier one."""
    ids = [s.id for s in recipe.stages]
    for i, st in enumerate(recipe.stages):
        earlier = ids[:i]
        inputs = st.inputs()
        for ref in inputs.stages + [m for m in inputs.models if m in ids]:
            if ref in earlier:
                continue
            key = inputs.where.get(ref, "")
            where = _where(source, root, ["stages", i, *_path_parts(key)])
            if ref in ids:
                msg = f"stage '{ref}', which runs later (or is this stage). A stage reads only earlier stages: reorder them."
            elif ref in inputs.stages:
                msg = f"no stage with id '{ref}'{did_you_mean(ref, earlier)}. Earlier stages: {', '.join(earlier) or 'none'}."
            else:
                continue  # a folder path: checked by _check_paths
            raise RecipeError(f"{where}: stages[{i}].{key} ('{st.id}') refers to {msg}")


def _check_paths(recipe: Recipe, source: str, root: yaml.Node | None, allow_pickle: bool) -> None:
    """Input files exist; model folders exist and pass the same checks (pickle rule included) as `run`."""
    ids = {s.id for s in recipe.stages}
    for i, st in enumerate(recipe.stages):
        inputs = st.inputs()
        for f in inputs.files:
            if not Path(f).exists():
                key = inputs.where.get(f, "")
                raise RecipeError(
                    f"{_where(source, root, ['stages', i, *_path_parts(key)])}: stages[{i}].{key} ('{st.id}'): "
                    f"file '{f}' not found (paths are relative to where you run llmopt)."
                )
        for ref in inputs.models:
            if ref in ids or ref.startswith("builtin:"):
                continue
            key = inputs.where.get(ref, "")
            where = f"{_where(source, root, ['stages', i, *_path_parts(key)])}: stages[{i}].{key} ('{st.id}')"
            if not Path(ref).exists():
                raise RecipeError(f"{where}: '{ref}' is neither an earlier stage id{did_you_mean(ref, ids)} "
                                  "nor an existing model folder.")
            if (Path(ref) / "model.onnx").is_file():
                continue  # an exported ONNX model folder; the evaluate stage checks it
            ggufs = [Path(ref)] if Path(ref).suffix == ".gguf" else sorted(Path(ref).glob("*.gguf"))
            if ggufs:  # a GGUF file, or a folder holding one (a causal quantize output): its magic is checked
                from llmopt.llm import check_gguf

                try:
                    check_gguf(ggufs[0])
                except ModelError as e:
                    raise RecipeError(f"{where}: {e}") from None
                continue
            try:  # file checks only: nothing is loaded
                check_model_dir(Path(ref), need_tokenizer=True, allow_pickle=allow_pickle)
            except ModelError as e:
                raise RecipeError(f"{where}: {e}") from None


def _path_parts(key: str) -> list:
    """'source.train' → ['source', 'train']; 'models[1]' → ['models', 1]."""
    parts: list = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return parts


def _format_validation(
    err: ValidationError, cls: type[BaseModel], source: str, root: yaml.Node | None, prefix: list, stage_id: Any
) -> str:
    errors = err.errors()
    first = _first_error(errors)
    loc = [p for p in first["loc"] if not _is_union_tag(p)]
    full = prefix + loc
    key_path = _key_path(full)
    where = _where(source, root, full)
    label = f" (stage '{stage_id}')" if stage_id else ""
    # "recipe.yaml:12: stages[0].source.path (stage 'data')", or just "override 'k=v'", which names the key itself
    head = where if where.startswith("override '") else f"{where}: {key_path}{label}"
    kind = first["type"]
    if kind == "extra_forbidden":
        fields = _fields_at(cls, loc[:-1])
        bad = str(loc[-1])
        members = _models_at(cls, loc[:-1])
        if bad in fields and len(members) > 1:  # a key of another member of a union: keys of two forms mixed
            forms = " or ".join("/".join(f"`{k}:`" for k in list(m.model_fields)[:2])
                                + (" …" if len(m.model_fields) > 2 else "") for m in members)
            given = sorted({str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"
                            and [q for q in e["loc"] if not _is_union_tag(q)][:-1] == loc[:-1]})
            return (f"{head}: `{_key_path(loc[:-1])}` takes either {forms}, not keys of both"
                    + (f" (got {', '.join(given)})" if given else "") + ".")
        hint = did_you_mean(bad, fields)
        moved = _moved_field(cls, loc[:-1], bad)
        if moved:
            return (f"{head}: '{bad}' is now set in the `{moved}:` block. Write it as "
                    f"`{moved}: {{{bad}: ...}}` (did you mean '{moved}.{bad}'?).")
        return (
            f"{head}: unknown key '{bad}'{hint}. "
            f"Allowed keys here: {', '.join(sorted(fields))}."
        )
    if kind == "missing":
        return f"{head}: required key is missing. Add it (see `llmopt stages`)."
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{head}: {first['msg']} (got {shown}). Fix the value (see `llmopt stages`)."


def _first_error(errors: list[dict]) -> dict:
    """The error that explains the problem best: an unknown key (the likeliest cause, a typo) — unless a
    union member that knows every given key failed otherwise (`source: {path: a, dev: b}`: path goes
    without dev; that is the message, not the other member's "unknown key 'path'")."""
    extras = [e for e in errors if e["type"] == "extra_forbidden"]
    with_extras = {t for e in extras for t in e["loc"] if _is_union_tag(t)}
    for e in errors:
        tags = [t for t in e["loc"] if _is_union_tag(t) and t not in ("str", "int", "float", "dict")]
        if e["type"] != "extra_forbidden" and tags and not with_extras.intersection(tags):
            return e
    return extras[0] if extras else errors[0]


def _moved_field(cls: type[BaseModel], loc: list, bad: str) -> str | None:
    """The nested block (train:, kd:) of this stage that has a field named `bad`, if any."""
    for m in _models_at(cls, loc):
        for name, info in m.model_fields.items():
            for sub in _models_in(info.annotation):
                if name in ("train", "kd") and bad in sub.model_fields:
                    return name
    return None


def _is_union_tag(p: Any) -> bool:
    # pydantic puts the union member's name in the location, e.g. 'BuiltinSource' or 'str'
    # ... or 'function-after[_one_layout(), FileSource]' for a member with a validator
    return isinstance(p, str) and (p[:1].isupper() or "[" in p or p in ("str", "int", "float", "dict"))


def _fields_at(cls: type[BaseModel], loc: list) -> list[str]:
    """Field names of the model(s) reachable from `cls` by `loc`, for did-you-mean."""
    names: set[str] = set()
    for m in _models_at(cls, loc):
        names.update(m.model_fields)
    return sorted(names)


def _models_at(cls: type[BaseModel], loc: list) -> list[type[BaseModel]]:
    models: list[type] = [cls]
    for part in loc:
        nxt: list[type] = []
        for m in models:
            if isinstance(part, int):
                nxt.append(m)
                continue
            if isinstance(m, type) and issubclass(m, BaseModel) and part in m.model_fields:
                nxt.extend(_models_in(m.model_fields[part].annotation))
        models = nxt
    return [m for m in models if isinstance(m, type) and issubclass(m, BaseModel)]


def _models_in(ann: Any) -> list[type]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type] = []
    for a in typing.get_args(ann):
        out.extend(_models_in(a))
    return out


def _key_path(parts: list) -> str:
    s = ""
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s or "<root>"


def _where(source: str, root: yaml.Node | None, path: list) -> str:
    """'recipe.yaml:12' for a key in the file, or "override 'k=v'" when a command-line override set it."""
    for key, item in _OVERRIDDEN.get().items():
        if tuple(path[:len(key)]) == key:
            return f"override '{item}'"
    line = _line_of(root, path)
    return f"{source}:{line}" if line else source


def _line_of(node: yaml.Node | None, path: list) -> int | None:
    """1-based line of the deepest node along `path` in the composed YAML tree."""
    line = None
    for part in path:
        if node is None:
            break
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line, child = k.start_mark.line + 1, v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        node = child
    return line
