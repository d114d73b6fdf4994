"""prompt stage: prompt variants × few-shot k × example strategy on a causal LM or an OpenAI-compatible endpoint,
repeated with seeded example draws, with intervals, a paired test against zero-shot, the best chosen on dev and
reported once on test beside the run's fine-tuned models; the winning prompt saved for reuse (`from_artifact`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmopt.stages.base import (BuiltinModel, InputFile, ModelRef, StageConfig, StageContext, StageRef, StageResult,
                                Strict)

ARTIFACT = "prompt.json"
ARTIFACT_FORMAT = "llmopt-prompt/1"


class PromptVariant(Strict):
    """One wording: a Jinja user-turn template (strict: a missing field is an error), optional system prompt,
    context and output-format text (the template reads them as {{ context }} / {{ output_format }}), label words."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    template: str = Field(description="Jinja; reads {{ text }}, {{ labels }}, {{ label_list }}, {{ context }}, "
                          "{{ output_format }}, {{ examples }} (inline few-shot) and other row fields")
    system: str | None = None
    context: str | None = None
    output_format: str | None = None
    label_words: dict[str, str] = Field(default_factory=dict, description="label → answer word (default: the label)")


class LocalBackendConfig(Strict):
    type: Literal["local"] = "local"
    model: ModelRef = BuiltinModel(builtin="smollm2-135m")
    threads: int | None = Field(None, ge=1, description="default: the run's")


class OpenAIBackendConfig(Strict):
    type: Literal["openai"] = "openai"
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the model name the server expects")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, description="tries after the first on 429, 5xx and connection errors")
    backoff_s: float = Field(0.5, ge=0, description="wait before retry n: backoff_s × 2^n")
    max_concurrency: int = Field(4, ge=1)


class PromptConfig(StageConfig):
    """Which prompt works, measured: every variant × shots × strategy on dev, r repeats, the best once on test."""

    type: Literal["prompt"] = "prompt"
    data: StageRef = "data"
    backend: LocalBackendConfig | OpenAIBackendConfig = Field(default_factory=LocalBackendConfig,
                                                              discriminator="type")
    method: Literal["loglik", "generate"] = Field(
        "loglik", description="loglik: the most likely answer word; generate: a greedy answer parsed to a label "
        "(unparseable answers count as wrong)")
    variants: list[PromptVariant] = Field(default_factory=list)
    shots: list[int] = Field([0, 4], description="few-shot k values (0 = zero-shot)")
    strategies: list[Literal["random", "balanced", "nearest", "mmr"]] = ["random", "balanced", "nearest"]
    repeats: int = Field(3, ge=1, description="seeded example draws per few-shot setting")
    pool_size: int | None = Field(1000, ge=1, description="nearest/mmr: a seeded sample of train rows per repeat "
                                  "to choose from (null: all)")
    max_new_tokens: int = Field(8, ge=1, description="method generate: answer length")
    select_on: Literal["dev"] = "dev"
    test: bool = Field(True, description="score the chosen prompt (and zero-shot) once on the test split")
    compare_with: list[StageRef] = Field(default_factory=list, description="evaluate stages whose test-split "
                                         "models are shown beside the chosen prompt")
    from_artifact: InputFile | None = Field(None, description="a saved prompt.json: score it on test instead of "
                                            "searching (variants/shots/strategies unused)")
    bootstrap_resamples: int = Field(1000, ge=100)
    cache: bool = Field(True, description="cache every model call in the user cache directory (SQLite)")

    @model_validator(mode="after")
    def _grid(self) -> "PromptConfig":
        if self.from_artifact is None and not self.variants:
            raise ValueError("give at least one entry in `variants:` (or `from_artifact:`)")
        names = [v.name for v in self.variants]
        if len(set(names)) < len(names):
            raise ValueError(f"variant names must be unique: {names}")
        if any(k < 0 for k in self.shots) or not self.shots:
            raise ValueError("shots: a non-empty list of k ≥ 0")
        if any(self.shots) and not self.strategies:
            raise ValueError("few-shot k > 0 needs at least one strategy")
        if self.backend.type == "openai" and self.method == "loglik":
            raise ValueError("backend type openai scores by generation: set method: generate")
        return self


def _backend(cfg: PromptConfig, ctx: StageContext) -> Any:
    from llmopt.prompting.backends import Cached, LocalHF, OpenAIChat
    from llmopt.prompting.cache import CallCache

    b = cfg.backend
    if b.type == "local":
        inner: Any = LocalHF(ctx.model_dir(b.model), b.threads or ctx.threads, allow_pickle=ctx.allow_pickle)
    else:
        inner = OpenAIChat(b.base_url, b.model, b.api_key_env, b.timeout_s, b.retries, b.backoff_s,
                           b.max_concurrency)
    return Cached(inner, CallCache()) if cfg.cache else inner


def _template(v: dict[str, Any], labels: list[str]) -> Any:
    from llmopt.data.sft import label_word_map
    from llmopt.prompting.templates import PromptTemplate

    return PromptTemplate(name=v["name"], template=v["template"], system=v.get("system"), context=v.get("context"),
                          output_format=v.get("output_format"),
                          label_words=label_word_map(labels, v.get("label_words") or None))


def run(cfg: PromptConfig, ctx: StageContext) -> StageResult:
    """Score every setting on dev (`repeats` seeded draws each), test each against zero-shot (paired bootstrap),
    choose the best by mean dev accuracy, save it to artifacts/prompt.json, score it once on test beside zero-shot
    and the fine-tuned models of `compare_with`. With `from_artifact`: score that saved prompt on test."""
    import time

    from llmopt.data.artifact import load_data_artifact
    from llmopt.fsutil import atomic_write_json
    from llmopt.prompting.fewshot import ExamplePool
    from llmopt.prompting.run import Setting

    t0 = time.perf_counter()
    data = load_data_artifact(ctx.artifacts_of(cfg.data))
    labels = data.labels
    backend = _backend(cfg, ctx)
    pool = ExamplePool(data.train)
    common = dict(backend=backend, labels=labels, method=cfg.method, seed=ctx.seed, pool=pool,
                  pool_size=cfg.pool_size, max_new_tokens=cfg.max_new_tokens, resamples=cfg.bootstrap_resamples)
    metrics: dict[str, Any] = {"backend": {"type": cfg.backend.type, "model": backend.model}, "method": cfg.method,
                               "labels": labels, "seed": ctx.seed}
    if cfg.from_artifact is not None:
        art = load_artifact(Path(cfg.from_artifact), labels)
        best = _setting_of(art, labels)
        metrics["from_artifact"] = str(cfg.from_artifact)
        metrics["test"] = _score_split(data, "test", best, art, zero=None, **common)
    else:
        variants = [_template(v.model_dump(), labels) for v in cfg.variants]
        grid = [Setting(v, k, "random" if k == 0 else s) for v in variants for k in cfg.shots
                for s in (["random"] if k == 0 else cfg.strategies)]
        zero = Setting(variants[0], 0, "random")
        if zero not in grid:
            grid.insert(0, zero)
        dev = data.split(cfg.select_on)
        table = grid_table(grid, zero, dev, data.ids(dev), cfg.repeats, **common)
        best_row = max(table, key=lambda r: (r["accuracy"], -r["k"]))  # ties: the shorter prompt
        best = next(s for s in grid if s.name == best_row["name"])
        art = _artifact(best, best_row, labels, pool, cfg, ctx.seed)
        atomic_write_json(ctx.out_dir / ARTIFACT, art)
        for r in table:
            r.pop("_preds")
        metrics.update({"split": cfg.select_on, "n_dev": len(dev), "variants": table, "best": best_row["name"],
                        "artifact": f"artifacts/{ARTIFACT}"})
        if cfg.test and data.test:
            metrics["test"] = _score_split(data, "test", best, art, zero=zero, **common)
    if cfg.compare_with:
        metrics["finetuned"] = _finetuned(cfg, ctx)
    inner = getattr(backend, "inner", backend)
    metrics["calls"] = inner.calls
    if hasattr(inner, "computed_tokens"):  # local: prompt tokens run through the model / taken from a shared prefix
        metrics["prompt_tokens"] = {"computed": inner.computed_tokens, "reused": inner.reused_tokens}
    metrics["cache"] = ({"hits": backend.cache.hits, "misses": backend.cache.misses, "path": str(backend.cache.path)}
                        if cfg.cache else None)
    metrics["stage_seconds"] = round(time.perf_counter() - t0, 2)
    return StageResult(metrics)


def grid_table(grid: list, zero: Any, rows: list[dict], y: list[int], repeats: int, *, resamples: int,
               on_row: Any = None, **common: Any) -> list[dict[str, Any]]:
    """Every setting on the rows: stats over repeats, and the paired test against zero-shot; `on_row(row)` is
    called as each setting finishes (progress)."""
    from llmopt.prompting.run import paired_repeats, repeat_stats, run_setting

    n_labels = len(common["labels"])
    table = []
    for s in grid:
        res = run_setting(setting=s, rows=rows, repeats=repeats, **common)
        preds = [r["preds"] for r in res["runs"]]
        runs = res["runs"]
        secs = sum(r["seconds"] for r in runs)
        toks = sum(r["prompt_tokens"] for r in runs)
        table.append({"name": s.name, "variant": s.variant.name, "k": s.k, "strategy": s.strategy if s.k else None,
                      **repeat_stats(y, preds, n_labels, resamples, common["seed"]),
                      "unparseable": [r["unparseable"] for r in runs], "calls": sum(r["calls"] for r in runs),
                      "cached": sum(r["cached"] for r in runs), "seconds": round(secs, 2), "prompt_tokens": toks,
                      "prompt_tokens_per_s": toks / secs if toks and secs > 0 else None, "_preds": preds})
        if on_row is not None:
            on_row(table[-1])
    ref = next(r for r in table if r["name"] == zero.name)
    for r in table:
        r["vs_zero_shot"] = (None if r is ref else
                             paired_repeats(y, r["_preds"], ref["_preds"], n_labels, resamples, common["seed"] + 1))
        r["p_vs_zero_shot"] = r["vs_zero_shot"]["accuracy"]["p_value"] if r["vs_zero_shot"] else None
    return table


def _artifact(best: Any, row: dict, labels: list[str], pool: Any, cfg: PromptConfig, seed: int) -> dict[str, Any]:
    """The winning prompt, self-contained: template, system, context, output format, label words, and the examples
    (repeat 0's draw for random/balanced; for nearest/mmr the pool of train rows it chooses from per query)."""
    from llmopt.prompting.fewshot import PER_QUERY, select
    from llmopt.prompting.run import repeat_seed

    v = best.variant
    art: dict[str, Any] = {
        "format": ARTIFACT_FORMAT, "name": best.name, "template": v.template, "system": v.system,
        "context": v.context, "output_format": v.output_format, "label_words": v.label_words, "labels": labels,
        "k": best.k, "strategy": best.strategy if best.k else None, "method": cfg.method, "seed": repeat_seed(seed, 0),
        "examples": [], "pool": None, "dev": {"accuracy": row["accuracy"], "ci": row["ci"], "n": row["n"]}}
    if best.k and best.strategy in PER_QUERY:
        art["pool"] = [{"text": r["text"], "label": r["label"]} for r in pool.subset(cfg.pool_size, art["seed"]).rows]
    elif best.k:
        art["examples"] = [{"text": r["text"], "label": r["label"]}
                           for r in select(pool, best.strategy, best.k, art["seed"], labels=labels)]
    return art


def load_artifact(path: Path, labels: list[str] | None = None) -> dict[str, Any]:
    """A saved prompt.json, checked: its format, its fields, and (when given) that its labels are the data's."""
    from llmopt.errors import DataError
    from llmopt.fsutil import read_json

    try:
        art = read_json(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable prompt artifact ({e}).") from None
    if not isinstance(art, dict) or art.get("format") != ARTIFACT_FORMAT:
        raise DataError(f"{path}: not a prompt artifact (format {ARTIFACT_FORMAT!r} expected); give the "
                        "artifacts/prompt.json a prompt stage wrote.")
    missing = [f for f in ("template", "label_words", "labels", "k", "examples") if f not in art]
    if missing:
        raise DataError(f"{path}: field {missing[0]!r} is missing; the file is damaged, write it again.")
    if labels is not None and sorted(art["labels"]) != sorted(labels):
        raise DataError(f"{path}: the prompt's labels {art['labels']} are not the data's {labels}.")
    return art


def _setting_of(art: dict[str, Any], labels: list[str]) -> Any:
    from llmopt.prompting.run import Setting

    t = _template({"name": art.get("name", "saved").replace(" ", "_") or "saved", **{
        f: art.get(f) for f in ("template", "system", "context", "output_format", "label_words")}}, labels)
    return Setting(t, int(art["k"]), art.get("strategy") or "random")


def _score_split(data: Any, split: str, best: Any, art: dict[str, Any], zero: Any, *, backend: Any,
                 labels: list[str], method: str, seed: int, pool: Any, pool_size: int | None, max_new_tokens: int,
                 resamples: int) -> dict[str, Any]:
    """The saved prompt, exactly as saved (its examples or its pool), once on the split; zero-shot beside it."""
    from llmopt.prompting.fewshot import PER_QUERY, ExamplePool, select
    from llmopt.prompting.run import paired_repeats, predict, repeat_stats

    rows = data.split(split)
    y = data.ids(rows)
    if best.k and best.strategy in PER_QUERY:
        saved = ExamplePool(art["pool"], pool._embed)
        saved.embed_queries([r["text"] for r in rows])

        def examples_for(i: int, row: dict) -> list[dict]:
            return select(saved, best.strategy, best.k, art["seed"], query_text=row["text"], labels=labels)
    else:
        def examples_for(i: int, row: dict) -> list[dict]:
            return [ex for ex in art["examples"] if ex["text"] != row["text"]]
    out = predict(backend, best.variant, rows, labels, method, examples_for, max_new_tokens)
    res = {"split": split, "name": best.name, **repeat_stats(y, [out["preds"]], len(labels), resamples, seed),
           "unparseable": out["unparseable"]}
    if zero is not None and zero.name != best.name:
        z = predict(backend, zero.variant, rows, labels, method, lambda i, r: [], max_new_tokens)
        res["zero_shot"] = {"name": zero.name, **repeat_stats(y, [z["preds"]], len(labels), resamples, seed),
                            "unparseable": z["unparseable"]}
        res["vs_zero_shot"] = paired_repeats(y, [out["preds"]], [z["preds"]], len(labels), resamples, seed + 1)
    return res


def _finetuned(cfg: PromptConfig, ctx: StageContext) -> dict[str, Any]:
    """Test-split accuracy [CI] of every model in the `compare_with` evaluate stages (classifiers and causal LMs)."""
    from llmopt.errors import RecipeError
    from llmopt.fsutil import read_json

    out: dict[str, Any] = {}
    for sid in cfg.compare_with:
        m = read_json(ctx.stage_dirs[sid] / "metrics.json")
        if "models" not in m and "causal" not in m:
            raise RecipeError(f"prompt '{cfg.id}': compare_with '{sid}' is not an evaluate stage; name one.")
        for name, e in (m.get("models") or {}).items():
            if m.get("split") == "test":
                out[name] = {"stage": sid, "accuracy": e["accuracy"], "ci": e.get("accuracy_ci"),
                             "macro_f1": e.get("macro_f1"), "n": m.get("n")}
        c = m.get("causal") or {}
        for name, e in (c.get("models") or {}).items():
            cl = e.get("classification")
            if cl and c.get("split") == "test":
                out[name] = {"stage": sid, "accuracy": cl["accuracy"], "ci": cl.get("accuracy_ci"),
                             "macro_f1": cl.get("macro_f1"), "n": cl.get("n")}
    return out


def section(sid: str, m: dict, doc: Any) -> None:
    """The grid (accuracy and macro-F1 with 95% intervals over repeats, p against zero-shot), the chosen prompt on
    test beside zero-shot and the fine-tuned models, tokens/s and the cache's hits."""
    doc.h(2, f"Prompting ({sid})")
    b = m["backend"]
    doc.p(f"Backend {b['type']} ({b['model'].split('|')[0]}), method {m['method']}; labels {', '.join(m['labels'])}.")

    def ci(c: list | None) -> str:
        return f"[{c[0]:.3f}, {c[1]:.3f}]" if c else "—"

    if m.get("variants"):
        doc.p(f"Every setting on the {m['split']} split (n = {m['n_dev']:,}); few-shot settings repeated with "
              "seeded example draws; intervals: 95% bootstrap over rows, each row's correctness averaged over the "
              "repeats; p: paired bootstrap against the first variant zero-shot.")
        doc.table(["setting", "repeats", "accuracy [95% CI]", "sd over repeats", "macro-F1 [95% CI]",
                   "unparseable", "p vs zero-shot", "prompt tokens/s"],
                  [[r["name"] + (" ★" if r["name"] == m["best"] else ""), str(r["repeats"]),
                    f"{r['accuracy']:.3f} {ci(r['ci'])}", f"{r['accuracy_sd']:.3f}",
                    f"{r['macro_f1']:.3f} {ci(r['macro_f1_ci'])}", str(sum(r["unparseable"])),
                    "—" if r["p_vs_zero_shot"] is None else f"{r['p_vs_zero_shot']:.3f}",
                    f"{r['prompt_tokens_per_s']:.0f}" if r.get("prompt_tokens_per_s") else "cached"]
                   for r in m["variants"]])
        doc.p(f"Chosen on {m['split']}: {m['best']} (saved as {m['artifact']}).")
    t = m.get("test")
    if t:
        rows = [[f"prompt: {t['name']}", f"{t['accuracy']:.3f} {ci(t['ci'])}", f"{t['macro_f1']:.3f}", str(t["n"])]]
        if t.get("zero_shot"):
            z = t["zero_shot"]
            rows.append([f"prompt: {z['name']}", f"{z['accuracy']:.3f} {ci(z['ci'])}", f"{z['macro_f1']:.3f}",
                         str(z["n"])])
        for name, e in (m.get("finetuned") or {}).items():
            rows.append([f"fine-tuned: {name} ({e['stage']})", f"{e['accuracy']:.3f} {ci(e.get('ci'))}",
                         f"{e['macro_f1']:.3f}" if e.get("macro_f1") is not None else "—", str(e.get("n") or "—")])
        doc.p("The chosen prompt scored once on the test split" + (f" (from {m['from_artifact']})"
                                                                   if m.get("from_artifact") else "") + ".")
        doc.table(["model", "accuracy [95% CI]", "macro-F1", "n"], rows)
    c = m.get("cache")
    doc.p(f"Model calls: {m['calls']:,}" + (f"; cache hits {c['hits']:,}, misses {c['misses']:,}." if c else ".")
          + f" Stage time {m['stage_seconds']:.0f} s.")
