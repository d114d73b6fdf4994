"""What `llmopt serve` serves: a causal LM (generation with sampling, stop strings and streaming, token by token) or
a classifier (label probabilities), loaded through the project's one loader for each
(`eval.causal.load_causal_runner`: a transformers folder, or a GGUF in llama.cpp when llama-cpp-python is
installed; `eval.predictors.load_predictor`: PyTorch or ONNX Runtime), and which model of a run directory to serve.

None of these objects is safe to call from two threads at once (torch modules with a KV cache, llama.cpp contexts):
the app calls them from one worker thread only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmopt.errors import ModelError, RunDirError


@dataclass
class Chunk:
    """One step of a generation: new text (possibly empty while a stop string may still be forming), and at the end
    finish_reason ("stop" or "length") with the token counts."""
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CausalModel:
    kind = "causal"

    def __init__(self, path: Path, threads: int = 1, n_ctx: int = 2048, allow_pickle: bool = False) -> None:
        from llmopt.eval.causal import LlamaCppRunner, load_causal_runner

        self.path = Path(path)
        self.runner = load_causal_runner(self.path, threads, allow_pickle=allow_pickle, n_ctx=n_ctx)
        self.tokenizer = self.runner.tokenizer
        self.runtime = self.runner.runtime
        self.llama = isinstance(self.runner, LlamaCppRunner)
        if self.llama:
            self.n_ctx = n_ctx
        else:
            cfg = self.runner.model.config
            self.n_ctx = int(getattr(cfg, "max_position_embeddings", None) or n_ctx)
        self.eos = {t for t in _as_list(getattr(self.tokenizer, "eos_token_id", None))}
        gen_eos = getattr(getattr(self.runner, "model", None), "generation_config", None)
        self.eos |= set(_as_list(getattr(gen_eos, "eos_token_id", None)))

    # --- prompts ---------------------------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation through the tokenizer's chat template with the generation prompt."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; use /v1/completions")
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    def text_prompt(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    # --- generation ------------------------------------------------------------------------------------------------
    def _steps(self, prompt_ids: list[int]) -> Iterator[np.ndarray]:
        """Next-token logits after the prompt, then after each token sent back with .send(token)."""
        if self.llama:
            llm = self.runner._llm(False)
            n_vocab = llm.n_vocab()
            llm.reset()
            llm.eval(list(prompt_ids))
            while True:
                tok = yield np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).astype(np.float64)
                llm.eval([tok])
        import torch

        model = self.runner.model
        with self.runner._threads(), torch.inference_mode():
            out = model(torch.tensor([prompt_ids]), use_cache=True)
            while True:
                tok = yield out.logits[0, -1].double().numpy()
                out = model(torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)

    def generate(self, prompt_ids: list[int], max_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 stop: list[str] | None = None, seed: int | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[Chunk]:
        """Sample up to max_tokens tokens (temperature 0: greedy), yielding text as it becomes final: text that
        could be the start of a stop string is held back until it is not; a stop string ends the generation and is
        not returned; so is EOS."""
        rng = np.random.default_rng(seed)
        tok, stop = self.tokenizer, stop or []
        new: list[int] = []
        sent, finish, hit = 0, "length", False  # sent: characters of the decoded text already yielded
        steps = self._steps(prompt_ids)
        try:
            logits = next(steps)
            while len(new) < max_tokens and not cancelled():
                t = sample(logits, temperature, top_p, rng)
                if t in self.eos:
                    finish = "stop"
                    break
                new.append(t)
                text = tok.decode(new, skip_special_tokens=True)
                cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
                if cut >= 0:
                    if cut > sent:
                        yield Chunk(text[sent:cut])
                    finish, hit = "stop", True
                    break
                safe = len(text) - _held_back(text, stop)
                if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                    safe = min(safe, len(text) - 1)
                if safe > sent:
                    yield Chunk(text[sent:safe])
                    sent = safe
                if len(new) < max_tokens:
                    logits = steps.send(t)
            if not hit:  # what was held back for a stop string that never came
                text = tok.decode(new, skip_special_tokens=True)
                if len(text) > sent:
                    yield Chunk(text[sent:])
        finally:
            steps.close()
        yield Chunk("", finish, len(prompt_ids), len(new))

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()


def _as_list(v: Any) -> list[int]:
    if v is None:
        return []
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that is the start of a stop string (it may yet become one)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; else softmax(logits / temperature) cut to the smallest set of tokens whose
    probability reaches top_p (nucleus), sampled with rng."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = (logits - logits.max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


class ClassifierModel:
    kind = "classifier"

    def __init__(self, path: Path, threads: int = 1, allow_pickle: bool = False) -> None:
        from llmopt.eval.predictors import load_predictor

        self.path = Path(path)
        self.predictor = load_predictor(self.path, threads=threads, allow_pickle=allow_pickle)
        self.runtime = self.predictor.runtime
        cfg = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        id2label = cfg.get("id2label") or {}
        n = len(id2label) or int(cfg.get("num_labels") or 2)
        self.labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Rows in input order; a merged batch runs in length-sorted chunks of 16 (eval.predictors.predict_all), so
        one long text does not pad every short one."""
        from llmopt.eval.predictors import predict_all

        if len(texts) == 1:
            return np.asarray(self.predictor.predict_proba(texts), dtype=np.float64)
        return np.asarray(predict_all(self.predictor, texts, batch_size=16), dtype=np.float64)

    def close(self) -> None:
        pass


def load_served(path: Path, threads: int = 1, n_ctx: int = 2048, allow_pickle: bool = False) -> Any:
    """A CausalModel for a causal LM folder / GGUF folder / *.gguf, else a ClassifierModel (PyTorch or ONNX)."""
    from llmopt.eval.causal import is_causal_path

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: not found. Give a model folder, a GGUF file or a run directory.")
    if is_causal_path(path):
        return CausalModel(path, threads, n_ctx, allow_pickle)
    if path.is_dir() and (path / "config.json").is_file():
        return ClassifierModel(path, threads, allow_pickle)
    raise ModelError(f"{path}: neither a causal LM (a *ForCausalLM folder or a GGUF) nor a classifier folder "
                     "(config.json + weights or model.onnx).")


# --- which model of a run directory ---------------------------------------------------------------------------------

def _stage_dirs(run_dir: Path) -> dict[str, Path]:
    from llmopt.fsutil import read_json

    out: dict[str, Path] = {}
    root = run_dir / "stages"
    for sdir in sorted(root.iterdir()) if root.is_dir() else []:
        conf = sdir / "config.json"
        if (sdir / "DONE").is_file() and conf.is_file():
            out[str(read_json(conf).get("id") or sdir.name.split("-", 1)[-1])] = sdir
    return out


def _entry_folder(entry: dict[str, Any], run_dir: Path) -> Path | None:
    """The folder an evaluate entry's `path` names: as recorded (relative to where the run ran, runs/<name>/<run>/..
    from the run's parent folder), or, for a run directory that has moved, the same stages/... under run_dir (its
    stage folder found by stage id when the stage has moved in the recipe since)."""
    p = entry.get("path")
    if not p:
        return None
    cands = [Path(p), run_dir.parent.parent.parent / p]
    if "/stages/" in p:
        rest = p.rsplit("/stages/", 1)[1]
        cands.append(run_dir / "stages" / rest)
        folder, _, inner = rest.partition("/")  # a stage moved in the recipe since: its folder by stage id
        moved = _stage_dirs(run_dir).get(folder.split("-", 1)[-1])
        cands += [moved / inner] if moved is not None else []
    return next((c for c in cands if c.exists()), None)


def _recommended(sdir: Path, run_dir: Path) -> tuple[Path, str] | None:
    """The classifier an evaluate stage recommends (report.answer.recommend, the report's rule), or None."""
    from llmopt.fsutil import read_json
    from llmopt.report.answer import recommend

    ev = read_json(sdir / "metrics.json")
    if not ev.get("models"):
        return None
    try:
        rec = recommend(ev)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    name = rec["name"] if rec.get("kind") != "baseline" else ev.get("reference")
    folder = _entry_folder(ev["models"].get(name, {}), run_dir)
    return (folder, f"the model evaluate stage '{sdir.name.split('-', 1)[-1]}' recommends ({name})") if folder else None


def resolve_target(path: Path, stage: str | None = None) -> tuple[Path, str]:
    """(model path, why) for MODEL_OR_RUN_DIR: a model path as given; in a run directory the model of `stage`
    (a stage's artifacts/model, or what an evaluate stage recommends), else the model the last evaluate stage
    recommends, else the last finished stage's model."""
    from llmopt.fsutil import read_json

    path = Path(path)
    if not (path / "recipe.resolved.yaml").is_file():
        if stage is not None:
            raise RunDirError(f"--stage {stage}: {path} is not a run directory (no recipe.resolved.yaml).")
        return path, "as given"
    stages = _stage_dirs(path)
    with_model = [sid for sid, d in stages.items() if (d / "artifacts" / "model").exists()]
    if stage is not None:
        if stage not in stages:
            raise RunDirError(f"--stage {stage}: no finished stage '{stage}' in {path}; finished stages: "
                              f"{', '.join(stages) or 'none'}.")
        sdir = stages[stage]
        if (sdir / "artifacts" / "model").exists():
            return sdir / "artifacts" / "model", f"stage '{stage}'"
        if read_json(sdir / "config.json").get("type") == "evaluate":
            rec = _recommended(sdir, path)
            if rec:
                return rec
        raise RunDirError(f"--stage {stage}: that stage wrote no model; stages with a model: "
                          f"{', '.join(with_model) or 'none'}.")
    for sid in reversed(list(stages)):
        if read_json(stages[sid] / "config.json").get("type") == "evaluate":
            rec = _recommended(stages[sid], path)
            if rec:
                return rec
    if with_model:
        sid = with_model[-1]
        return stages[sid] / "artifacts" / "model", f"the last stage with a model ('{sid}')"
    raise RunDirError(f"{path}: no finished stage wrote a model; finish the run (llmopt run --resume) first.")


def log(msg: str) -> None:
    print(f"llmopt serve: {msg}", file=sys.stderr, flush=True)
