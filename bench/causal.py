"""Causal-LM benchmark: SmolLM2-135M in transformers (fp32, torchao), our GGUF exports and llama.cpp's own
quantizer in llama.cpp, against the shipped Q4_1 GGUF (the anchor); and a LoRA SFT of SmolLM2 on SST-2.

Runs bench/causal.yaml through llmopt itself (every causal row is measured by one evaluate stage: same threads,
prompts and WikiText-2 tokens), then writes bench/results/causal.json. Before the run it exports SmolLM2 to an
F32 GGUF with llmopt's exporter and quantizes that with llama.cpp's own quantizer (when llama-cpp-python is
installed: `make llamacpp`), so our quantizer and llama.cpp's are compared on the same weights. Reads
../shared/data; skips with a message when it is absent. `--part speed` (timing: run it on a quiet machine),
`--part sft` (accuracy only) or both (default); a rerun of one part keeps the other's keys in causal.json. A second
run resumes the latest bench run directory of that part; pass --fresh for a new one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RECIPE = ROOT / "bench" / "causal.yaml"  # part 1: speed and perplexity (run it on a quiet machine)
SFT_RECIPE = ROOT / "bench" / "causal_sft.yaml"  # part 2: LoRA SFT accuracy
OUT = ROOT / "bench" / "results" / "causal.json"
WORK = ROOT / "runs" / "bench-causal-gguf"  # the F32 export and llama.cpp's quantizations of it
FLOORS = {"gguf4_decode_vs_anchor": 0.9, "gguf4_ppl_vs_fp32": 1.03, "best_torch_decode_vs_fp32": 2.0}
AIMS = {"gguf4_decode_vs_anchor": 1.0, "gguf4_ppl_vs_fp32": 1.01}


def llamacpp_files() -> dict[str, str]:
    """{placeholder: path} of llama.cpp's own Q4_0 / Q4_1 quantizations of our F32 export (cached in WORK)."""
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed (make llamacpp): llama.cpp rows are left out")
        return {}
    from llmopt.compression.gguf_export import export_gguf, llama_cpp_quantize
    from llmopt.llm import smollm2_gguf, smollm2_path

    WORK.mkdir(parents=True, exist_ok=True)
    f32 = WORK / "smollm2-f32.gguf"
    if not f32.is_file():
        export_gguf(smollm2_path(), f32, "F32", base_gguf=smollm2_gguf())
    out = {}
    for q in ("Q4_0", "Q4_1"):
        dst = WORK / f"llamacpp-{q.lower()}" / f"smollm2-llamacpp-{q.lower()}.gguf"
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            llama_cpp_quantize(f32, dst, q)
        out[f"llamacpp_{q.lower()}"] = str(dst)
    return out


def compiled_fp32() -> dict[str, str]:
    """The fp32 SmolLM2 folder (files linked, not copied) with llmopt_runtime.json: compiled decode, static cache."""
    from llmopt.llm import smollm2_path

    src, dst = smollm2_path(), WORK / "smollm2-fp32-compiled"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f)
    (dst / "llmopt_runtime.json").write_text('{"compile": true, "static_cache": true}\n', encoding="utf-8")
    return {"fp32_compiled": str(dst)}


def write_recipe(extra: dict[str, str]) -> Path:
    import yaml

    from llmopt.llm import smollm2_gguf

    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    fill = {"anchor": str(smollm2_gguf()), **extra}
    for st in recipe["stages"]:
        if st["id"] == "evaluate_lm":
            models = []
            for m in st["models"]:
                if isinstance(m, str) and m.startswith("{") and m.endswith("}"):
                    if m[1:-1] in fill:
                        models.append(fill[m[1:-1]])
                else:
                    models.append(m)
            st["models"] = models
    path = ROOT / "runs" / "bench-causal.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def row_name(key: str, entry: dict) -> str:
    names = {"builtin:smollm2-135m": "smollm2 fp32 (transformers eager)", "smollm2-135m": "smollm2 fp32 (transformers eager)",
             "q4_0": "ours GGUF Q4_0", "q4_1": "ours GGUF Q4_1", "q8_0": "ours GGUF Q8_0",
             "torchao_int8": "torchao int8 weight-only", "torchao_int4": "torchao int4 weight-only"}
    if key in names:
        return names[key]
    if "compiled" in key:
        return "smollm2 fp32 (compiled decode, static cache)"
    if "llamacpp-q4_0" in key:
        return "llama.cpp quantizer Q4_0"
    if "llamacpp-q4_1" in key:
        return "llama.cpp quantizer Q4_1"
    if key.endswith(".gguf"):
        return "shipped Q4_1 (anchor)"
    return key


def int4_reason() -> dict:
    from llmopt.compression.torchao_quant import int4_cpu_support

    fmt, why = int4_cpu_support()
    return {"runs_here": fmt is not None, "packing_format": fmt, "why_not": why or None}


def run_part(recipe: Path, argv: list[str]) -> tuple[Path, dict, float]:
    from llmopt.pipeline import run_recipe
    from llmopt.rundir import stage_metrics

    t0 = time.perf_counter()
    run_dir = run_recipe(recipe, runs_root=ROOT / "runs", resume=None if "--fresh" in argv else "latest",
                         argv=["bench/causal.py", *argv])
    return run_dir, {sid: m for sid, _, m in stage_metrics(run_dir)}, time.perf_counter() - t0


def speed_part(argv: list[str]) -> dict:
    """Every causal runtime side by side in one evaluate stage: perplexity, prefill/decode tokens/s, RSS, size."""
    WORK.mkdir(parents=True, exist_ok=True)
    run_dir, metrics, wall = run_part(write_recipe({**llamacpp_files(), **compiled_fp32()}), argv)
    causal = metrics["evaluate_lm"]["causal"]
    rows = []
    for key, e in causal["models"].items():
        rows.append({
            "name": row_name(key, e), "model": key, "runtime": e["runtime"], "ppl": e["ppl"], "ppl_ci": e["ppl_ci"],
            "prefill_tok_s": e["prefill_tok_s"], "decode_tok_s": e["decode_tok_s"],
            "peak_rss_mb": e["peak_rss_mb"], "size_mb": e["size_bytes"] / 1e6,
        })
    by = {r["name"]: r for r in rows}
    fp32 = by["smollm2 fp32 (transformers eager)"]
    anchor = by.get("shipped Q4_1 (anchor)")
    ours4 = [r for r in rows if r["name"] in ("ours GGUF Q4_0", "ours GGUF Q4_1")]
    torch_rows = [r for r in rows if r["name"].startswith("torchao") or "compiled" in r["name"]]
    # the fastest 4-bit export whose perplexity is within the floor of fp32's (else the fastest, and the floor fails)
    within = [r for r in ours4 if r["ppl"] / fp32["ppl"] <= FLOORS["gguf4_ppl_vs_fp32"]]
    best = max(within or ours4, key=lambda r: r["decode_tok_s"]) if ours4 else None
    best_torch = max(torch_rows, key=lambda r: r["decode_tok_s"]) if torch_rows else None
    res: dict = {
        "data": "WikiText-2 test (../shared/data/wikitext2/test.txt), first 32,767 tokens, 512-token windows; "
                f"{metrics['evaluate_lm']['causal'].get('speed_prompts', 20)} prompts x 128 new tokens, greedy",
        "threads": metrics["evaluate_lm"].get("threads"),
        "speed_run_dir": str(run_dir),
        "speed_wall_s": round(wall, 1),
        "speed_stage_seconds": {sid: m.get("stage_seconds") for sid, m in metrics.items()},
        "quantize": {sid: {k: m.get(k) for k in ("outputs", "checks", "runtime_choice") if k in m}
                     for sid, m in metrics.items() if sid != "evaluate_lm"},
        "rows": rows,
        "anchor": anchor["name"] if anchor else None,
        "torchao_int4": int4_reason(),
    }
    if best and anchor:
        res["best_ours"] = {"name": best["name"], "decode_vs_anchor": best["decode_tok_s"] / anchor["decode_tok_s"],
                            "ppl_vs_anchor": best["ppl"] / anchor["ppl"], "ppl_vs_fp32": best["ppl"] / fp32["ppl"]}
    if best_torch:
        res["best_torch"] = {"name": best_torch["name"],
                             "decode_vs_fp32": best_torch["decode_tok_s"] / fp32["decode_tok_s"],
                             "ppl_vs_fp32": best_torch["ppl"] / fp32["ppl"]}
    floors = {}
    if "best_ours" in res:
        floors["gguf4_decode_vs_anchor"] = res["best_ours"]["decode_vs_anchor"] >= FLOORS["gguf4_decode_vs_anchor"]
        floors["gguf4_ppl_vs_fp32"] = res["best_ours"]["ppl_vs_fp32"] <= FLOORS["gguf4_ppl_vs_fp32"]
    if best_torch:
        floors["best_torch_decode_vs_fp32"] = res["best_torch"]["decode_vs_fp32"] >= FLOORS["best_torch_decode_vs_fp32"]
    res["floors"], res["aims"], res["floors_met"] = FLOORS, AIMS, floors
    print(f"{'model':34} {'runtime':28} {'ppl [95% CI]':22} {'prefill/s':>9} {'decode/s':>9} {'RSS MB':>7} {'MB':>7}")
    for r in rows:
        ci = r["ppl_ci"]
        print(f"{r['name'][:34]:34} {r['runtime'][:28]:28} " + f"{r['ppl']:6.2f} [{ci[0]:.2f}, {ci[1]:.2f}]".ljust(22)
              + f" {r['prefill_tok_s']:9.1f} {r['decode_tok_s']:9.1f} {r['peak_rss_mb']:7.0f} {r['size_mb']:7.1f}")
    return res


def sft_part(argv: list[str]) -> dict:
    """LoRA SFT of SmolLM2 on SST-2 as instruction, beside zero-shot SmolLM2, MiniLM and TF-IDF on the same rows."""
    run_dir, metrics, wall = run_part(SFT_RECIPE, argv)
    ev = metrics["evaluate_sft"]
    models = ev["causal"]["models"]
    sft, ft = models["sft"]["classification"], metrics["sft"]
    zero_key = next(k for k in models if k != "sft")
    zero = models[zero_key]["classification"]
    res = {"sft": {
        "accuracy": sft["accuracy"], "ci": sft["accuracy_ci"], "macro_f1": sft["macro_f1"],
        "unparseable": sft["unparseable"], "method": sft["method"],
        "zero_shot_accuracy": zero["accuracy"], "zero_shot_ci": zero["accuracy_ci"],
        "zero_shot_unparseable": zero["unparseable"],
        "vs_zero_shot": sft.get("paired", {}).get(zero_key),
        "minilm_accuracy": ev["models"]["minilm"]["accuracy"], "minilm_ci": ev["models"]["minilm"]["accuracy_ci"],
        "tfidf_accuracy": ev["models"].get("tfidf", {}).get("accuracy"),
        "n_train": ft.get("n_train"), "n_test": ev.get("n"),
        "wall_s": ft.get("stage_seconds"), "train_tokens": ft.get("train_tokens"),
        "train_tokens_per_s": ft.get("train_tokens_per_s"),
        "dev_loss_before_after": [ft.get("dev_loss_before"), ft.get("dev_loss")],
        "load_average_at_end": os.getloadavg()[0],
        "run_dir": str(run_dir), "part_wall_s": round(wall, 1),
    }}
    print(json.dumps(res, indent=2))
    return res


def main(argv: list[str]) -> int:
    if not (SHARED / "wikitext2" / "test.txt").is_file() or not (SHARED / "sst2" / "train.jsonl").is_file():
        print(f"skipped: {SHARED} (wikitext2, sst2) not found (the reference data lives in ../shared/data)")
        return 0
    part = argv[argv.index("--part") + 1] if "--part" in argv else "all"
    argv = [a for a in argv if a not in ("--part", part)]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)  # the recipes' data paths are relative to the project root
    from llmopt.fsutil import update_json

    result: dict = {"benchmark": "causal"}
    if part in ("speed", "all"):
        result.update(speed_part(argv))
    if part in ("sft", "all"):
        result.update(sft_part(argv))
    from llmopt.rundir import package_versions

    result["packages"] = package_versions()
    result = update_json(OUT, result)  # one part rerun keeps the other part's keys
    print(json.dumps({k: result.get(k) for k in ("best_ours", "best_torch", "floors_met")}, indent=2))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
