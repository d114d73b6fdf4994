"""A hyperparameter sweep of the training block: `learning_rate: auto` and `sweep: {field: [values, ...]}`.

Each candidate (the product of the swept values) is first trained for a short trial: a fraction of its own full
number of optimizer steps (so the trial sees that share of the train rows, one seeded order for every candidate),
scored on dev only. `sweep_strategy: halving` (successive halving) keeps the better half and doubles the
fraction until two remain and one is chosen; `grid` trains every candidate once. The fractions are planned so the
trials take about `sweep_budget` × one full training; the time of the full training is estimated from the trials'
own seconds per train row. A later rung that would cross the budget at the measured rates is shortened to fit
(if it still trains at least SHRINK_MIN x the previous rung's steps) or else skipped; no trial starts past it.

Resumable trial by trial: a finished trial is `trials/<name>.json` in the stage folder (written atomically), and
a resumed stage reads it instead of training again. Module level imports only pydantic (config.py uses the check).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from llmopt.training.config import TrainConfig

# Devlin et al. 2019 search {2e-5, 3e-5, 5e-5} for BERT-base; small encoders (MiniLM, distilled students) want
# more: on SST-2 MiniLM gives 87.3% test at 2e-5 and 89.8% at 1e-4. Roughly ×2–2.5 apart, 2e-4 the top before
# post-LN BERTs start to diverge; four values halve cleanly (4 → 2 → 1). 2e-5, the default, is tried first.
AUTO_LEARNING_RATES = (2e-5, 5e-5, 1e-4, 2e-4)
FIXED_LEARNING_RATE = 2e-5
PLAN_SHARE = 0.8  # the planned train rows fill 80% of the budget; dev scoring and set-up take the rest
SHRINK_MIN = 1.25  # a later rung shortened to fit the budget still trains at least 1.25x the previous rung's steps
NOT_SWEPT = {
    "sweep": "it is the sweep", "sweep_strategy": "it is how to sweep", "sweep_budget": "it is the sweep's budget",
    "compare_fixed": "it is a report option",
    "metric_for_best": "it is what the trials are compared on",
    "early_stopping_patience": "trials are short and never stop early, so they cannot measure it",
    "logging_steps": "it does not change what is learned", "save_total_limit": "it does not change what is learned",
    "eval_batch_size": "it does not change what is learned",
}


def check_sweep(cls: type, sweep: dict | None, info: dict) -> dict | None:
    """The `sweep` block checked and each value validated as its field (`cls` = TrainConfig; `info` = the
    fields validated before it); ValueError naming the key. Also refuses the sweep options without a sweep."""
    from pydantic import ValidationError

    from llmopt.errors import did_you_mean

    auto = info.get("learning_rate") == "auto"
    if sweep is None:
        if info.get("compare_fixed") and not auto:
            raise ValueError("compare_fixed: only with learning_rate: auto or a sweep; remove it or add a sweep")
        return None
    if not sweep:
        raise ValueError("sweep: empty; give {field: [value, ...]} (e.g. {weight_decay: [0, 0.01, 0.1]}) or remove it")
    out = {}
    for name, values in sweep.items():
        if name not in cls.model_fields:
            ok = [f for f in cls.model_fields if f not in NOT_SWEPT]
            raise ValueError(f"sweep.{name}: not a training field{did_you_mean(name, ok)}; fields that can be "
                             f"swept: {', '.join(ok)}")
        if name in NOT_SWEPT:
            raise ValueError(f"sweep.{name}: cannot be swept ({NOT_SWEPT[name]})")
        if name == "learning_rate" and auto:
            raise ValueError("sweep.learning_rate: learning_rate is auto, which already sweeps it "
                             f"({', '.join(map(str, AUTO_LEARNING_RATES))}); give learning_rate a number or remove "
                             "sweep.learning_rate")
        if not values:
            raise ValueError(f"sweep.{name}: empty list; give at least one value")
        checked = []
        for i, v in enumerate(values):
            try:
                checked.append(getattr(cls.model_validate({name: v}), name))
            except ValidationError as e:
                raise ValueError(f"sweep.{name}[{i}] = {v!r}: {e.errors()[0]['msg']}") from None
            if name == "learning_rate" and checked[-1] == "auto":
                raise ValueError(f"sweep.learning_rate[{i}]: give numbers, not auto")
        if len({repr(v) for v in checked}) != len(checked):
            raise ValueError(f"sweep.{name}: {values} repeats a value")
        out[name] = checked
    return out


def is_sweep(cfg: TrainConfig) -> bool:
    return cfg.learning_rate == "auto" or bool(cfg.sweep)


def refuse(cfg: TrainConfig, where: str = "this stage") -> None:
    """RecipeError when a stage that trains without a sweep is given one (only finetune's classification sweeps)."""
    if is_sweep(cfg):
        from llmopt.errors import RecipeError

        key = "train.learning_rate: auto" if cfg.learning_rate == "auto" else "train.sweep"
        raise RecipeError(f"{key}: {where} cannot sweep its training block; only finetune (task classification) "
                          "does. Give a number (e.g. the learning_rate a finetune stage chose: its report's trial "
                          "table) and remove sweep.")


def space(cfg: TrainConfig) -> tuple[list[str], list[dict[str, Any]]]:
    """The swept fields and every candidate (their product), 2e-5 first under auto."""
    axes = {**({"learning_rate": list(AUTO_LEARNING_RATES)} if cfg.learning_rate == "auto" else {}),
            **(cfg.sweep or {})}
    fields = list(axes)
    return fields, [dict(zip(fields, combo)) for combo in itertools.product(*axes.values())]


def concrete(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The training block with `values` set and the sweep removed: one full training."""
    return cfg.model_copy(update={**values, "sweep": None, "compare_fixed": False})


def fixed(cfg: TrainConfig) -> TrainConfig:
    """What the block would train without the sweep: learning_rate 2e-5 under auto, the block's own values else."""
    lr = FIXED_LEARNING_RATE if cfg.learning_rate == "auto" else cfg.learning_rate
    return concrete(cfg, {"learning_rate": lr})


def full_steps(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps of a full training (the Trainer's count: epochs × ceil(rows / batch) / accumulation)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size) // cfg.gradient_accumulation_steps)
    return max(1, math.ceil(cfg.epochs * per_epoch))


def rows_per_step(cfg: TrainConfig) -> int:
    return cfg.batch_size * cfg.gradient_accumulation_steps


def rung_sizes(n: int, strategy: str) -> list[int]:
    """Candidates per rung: halving 4 → [4, 2] (the better of the last two is chosen), grid [n]; [] for one."""
    if n < 2:
        return []
    if strategy == "grid":
        return [n]
    sizes = [n]
    while sizes[-1] > 2:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def trial_name(rung: int, steps: int, values: dict[str, Any]) -> str:
    text = "-".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", f"r{rung}-s{steps}-{text}")


class TrialOnly:
    """A trial neither saves checkpoints nor evaluates during training (it is scored once, at its end). A
    duck-typed TrainerCallback (every other event does nothing), at module level so DDP can pickle it to the other
    ranks, and so this module need not import transformers."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        control.should_save = control.should_evaluate = False
        return control

    on_epoch_end = on_step_end

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *a, **kw: None
        raise AttributeError(name)


class Sweep:
    """The trials of one training block before its full training: `run()` then `cfg` is the chosen block;
    `summary(...)` is what the stage reports (`lr_search`). `score(trainer, num_labels, metric, seed)` gives a
    trained trial's dev scores (`llmopt.eval.trials.score_dev`; training does not import eval)."""

    def __init__(self, cfg: TrainConfig, model: Any, tokenizer: Any, *, train: tuple[list[str], list[int]],
                 dev: tuple[list[str], list[int]], num_labels: int, seed: int, stage_dir: Path,
                 score: Callable[[Any, int, str, int], dict]) -> None:
        self.block, self.model, self.tokenizer, self.score = cfg, model, tokenizer, score
        self.train, self.dev, self.num_labels, self.seed = train, dev, num_labels, seed
        self.dir = Path(stage_dir) / "trials"
        self.fields, self.candidates = space(cfg)
        self.fixed = fixed(cfg)
        self.records: list[dict] = []
        self.trained_now = 0
        self.stopped: str | None = None
        self.shrunk: dict[int, float] = {}  # rung -> the fraction it was shortened to, to fit the budget
        self.chosen: dict[str, Any] = self.candidates[0]
        self.pristine: Any = None

    @property
    def cfg(self) -> TrainConfig:
        return concrete(self.block, self.chosen)

    # -- timing -------------------------------------------------------------------------------------------------
    def _rates(self) -> tuple[float, float, float] | None:
        """Seconds per train row, per dev scoring, and of set-up per trial, from the finished trials."""
        if not self.records:
            return None
        rows = sum(r["rows"] for r in self.records)
        per_row = sum(r["train_s"] for r in self.records) / max(rows, 1)
        n = len(self.records)
        eval_s = sum(r["eval_s"] for r in self.records) / n
        # the least set-up seen: the first trial's also pays one-time costs (imports, tokenizer warm-up)
        setup = min(max(0.0, r["seconds"] - r["train_s"] - r["eval_s"]) for r in self.records)
        return per_row, eval_s, setup

    def full_estimate_s(self) -> float | None:
        """One full training of the fixed block: its train rows at the trials' rate plus a dev pass per epoch."""
        rates = self._rates()
        if rates is None:
            return None
        n = len(self.train[0])
        evals = math.ceil(self.fixed.epochs) if self.fixed.max_steps <= 0 else 1
        return full_steps(self.fixed, n) * rows_per_step(self.fixed) * rates[0] + evals * rates[1] + rates[2]

    def budget_s(self) -> float | None:
        est = self.full_estimate_s()
        return None if est is None else self.block.sweep_budget * est

    def spent_s(self) -> float:
        return sum(r["seconds"] for r in self.records)

    def _estimate(self, plan: list[tuple[dict, int]]) -> float:
        per_row, eval_s, setup = self._rates()
        return sum(steps * rows_per_step(concrete(self.block, v)) * per_row + eval_s + setup for v, steps in plan)

    # -- the trials ---------------------------------------------------------------------------------------------
    def fractions(self) -> list[float]:
        """Share of each candidate's full steps per rung, planned so all rungs fill PLAN_SHARE of the budget."""
        sizes = rung_sizes(len(self.candidates), self.block.sweep_strategy)
        if not sizes:
            return []
        n = len(self.train[0])
        rows = [full_steps(concrete(self.block, c), n) * rows_per_step(concrete(self.block, c))
                for c in self.candidates]
        fixed_rows = full_steps(self.fixed, n) * rows_per_step(self.fixed)
        units = sum(size * 2 ** r for r, size in enumerate(sizes))
        f0 = PLAN_SHARE * self.block.sweep_budget * fixed_rows / (sum(rows) / len(rows) * units)
        out = []
        for r in range(len(sizes)):
            out.append(min(1.0, f0 * 2 ** r))
            if out[-1] >= 1.0:  # a longer trial than the full training measures nothing more
                break
        return out

    def _fitting_fraction(self, rung: int, alive: list[int], planned: float, previous: float) -> float | None:
        """The planned fraction of rung `rung`, or less when its unfinished trials would pass the budget at the
        measured rates: the longest that fits, if that still trains at least SHRINK_MIN × the previous rung's
        steps (shorter trials would rank nothing new); None when even that does not fit. Resumed trials are found
        by name: the finished records of the earlier rungs give the same fraction again."""
        def todo(f: float) -> list[tuple[dict, int]]:
            plan = [(self.candidates[i], self._steps(self.candidates[i], f)) for i in alive]
            return [(v, s) for v, s in plan if not (self.dir / f"{trial_name(rung, s, v)}.json").is_file()]

        left = self.budget_s() - self.spent_s()
        if not todo(planned) or self._estimate(todo(planned)) <= left:
            return planned
        per_row, eval_s, setup = self._rates()
        n = len(self.train[0])
        full_rows = sum(full_steps(concrete(self.block, self.candidates[i]), n)
                        * rows_per_step(concrete(self.block, self.candidates[i])) for i in alive)
        fits = (left - len(alive) * (eval_s + setup)) / max(full_rows * per_row, 1e-9)
        fits = math.floor(fits * 1000) / 1000  # a round share, so a resumed run plans the same steps
        return fits if fits >= SHRINK_MIN * previous else None

    def _steps(self, values: dict, fraction: float) -> int:
        return max(1, round(fraction * full_steps(concrete(self.block, values), len(self.train[0]))))

    def run(self) -> TrainConfig:
        """Every rung's trials (read back when finished before), within the budget; then choose on dev."""
        from llmopt import console
        from llmopt.fsutil import read_json

        self.dir.mkdir(parents=True, exist_ok=True)
        fractions = self.fractions()
        sizes = rung_sizes(len(self.candidates), self.block.sweep_strategy)[: len(fractions)]
        alive = list(range(len(self.candidates)))
        complete: list[list[dict]] = []
        for rung, (size, frac) in enumerate(zip(sizes, fractions)):
            if rung > 0:
                alive = [r["index"] for r in self._ranked(complete[-1], early=True)[:size]]
                planned = frac
                frac = self._fitting_fraction(rung, alive, frac, self.shrunk.get(rung - 1, fractions[rung - 1]))
                if frac is None:
                    plan = [(self.candidates[i], self._steps(self.candidates[i], planned)) for i in alive]
                    self.stopped = (f"rung {rung} ({len(plan)} trials at {planned:.0%} of the steps) skipped: about "
                                    f"{self._estimate(plan):.0f} s more would pass the budget of "
                                    f"{self.budget_s():.0f} s")
                    break
                if frac < planned:
                    self.shrunk[rung] = frac
                    console.note(f"sweep: rung {rung} shortened to {frac:.1%} of the steps (planned {planned:.0%}) "
                                 "to stay within the budget")
            results = []
            for i in alive:
                values = self.candidates[i]
                steps = self._steps(values, frac)
                path = self.dir / f"{trial_name(rung, steps, values)}.json"
                if not path.is_file():
                    if self.records and self.spent_s() + self._estimate([(values, steps)]) > self.budget_s():
                        self.stopped = (f"stopped in rung {rung}: the next trial would pass the budget of "
                                        f"{self.budget_s():.0f} s ({self.spent_s():.0f} s spent)")
                        break
                    console.note(f"sweep: trial {trial_name(rung, steps, values)} ({frac:.0%} of the steps)")
                    self._train_trial(path, rung, i, values, steps, frac)
                rec = read_json(path)
                self.records.append(rec)
                results.append(rec)
            if self.stopped:
                if rung == 0 and results:
                    complete.append(results)  # an unfinished first rung still ranks what it tried
                break
            complete.append(results)
        if complete:  # a sweep the budget cut before its last rung chooses among short trials: on dev loss
            cut = len(complete) < len(sizes) or bool(self.stopped)
            self.chosen = self.candidates[self._ranked(complete[-1], early=cut)[0]["index"]]
        if self.block.compare_fixed and self.cfg != self.fixed and not (self.dir / "fixed.json").is_file():
            import copy

            self.pristine = copy.deepcopy(self.model)  # the full training changes `model` in place
        return self.cfg

    def _ranked(self, records: list[dict], early: bool = False) -> list[dict]:
        """Best dev first; ties keep candidate order. The final choice ranks on metric_for_best. An early rung
        (`early`: which candidates go on, or the choice when the budget stopped the sweep before its last rung)
        ranks on dev loss: its trials are so short that most candidates still predict one class, where accuracy
        and F1 tie or differ by a row or two while the loss already separates them (successive halving's usual
        intermediate signal, Jamieson & Talwalkar 2016)."""
        if early or self.block.metric_for_best == "loss":
            return sorted(records, key=lambda r: (r["dev"]["loss"], r["index"]))
        return sorted(records, key=lambda r: (-r["dev"]["value"], r["index"]))

    def _train_trial(self, path: Path, rung: int, index: int, values: dict, steps: int, frac: float) -> None:
        import copy
        import shutil
        import time

        from llmopt.fsutil import atomic_write_json
        from llmopt.training.trainer import train_classifier

        cfg = concrete(self.block, values).model_copy(update={
            "max_steps": steps, "early_stopping_patience": None, "save_total_limit": 1,
            "logging_steps": max(1, min(self.block.logging_steps, steps))})
        work = self.dir / path.stem
        shutil.rmtree(work, ignore_errors=True)  # an interrupted trial starts again
        t0 = time.perf_counter()
        out = train_classifier(copy.deepcopy(self.model), self.tokenizer, train=self.train, dev=self.dev,
                               num_labels=self.num_labels, cfg=cfg, seed=self.seed, work_dir=work, keep_best=False,
                               callbacks=[TrialOnly()])
        t1 = time.perf_counter()
        dev = self.score(out.trainer, self.num_labels, self.block.metric_for_best, self.seed)
        t2 = time.perf_counter()
        losses = [h["loss"] for h in out.metrics["history"] if "loss" in h]
        atomic_write_json(path, {
            "name": path.stem, "rung": rung, "index": index, "values": values, "steps": steps, "fraction": frac,
            "rows": steps * rows_per_step(cfg), "train_s": out.metrics.get("train_runtime_s") or (t1 - t0),
            "eval_s": t2 - t1, "seconds": t2 - t0, "train_loss_last": losses[-1] if losses else None, "dev": dev})
        self.trained_now += 1
        shutil.rmtree(work, ignore_errors=True)

    # -- after the full training --------------------------------------------------------------------------------
    def summary(self, full_train_s: float | None = None, compare: dict | None = None) -> dict[str, Any]:
        """lr_search: every candidate with its trials, the chosen values, seconds, the budget and how it was used."""
        by_index: dict[int, list[dict]] = {}
        for r in self.records:
            by_index.setdefault(r["index"], []).append(r)
        cands = []
        for i, values in enumerate(self.candidates):
            trials = by_index.get(i, [])
            last = max(trials, key=lambda r: r["rung"]) if trials else None
            status = ("chosen" if values == self.chosen and (trials or len(self.candidates) == 1)
                      else "not tried (budget)" if not trials
                      else f"dropped after rung {last['rung']}")
            cands.append({"values": values, "status": status, "rung": last["rung"] if last else None,
                          "dev": last["dev"] if last else None, "steps": last["steps"] if last else None,
                          "seconds": sum(r["seconds"] for r in trials)})
        return {
            "fields": self.fields, "auto": self.block.learning_rate == "auto", "strategy": self.block.sweep_strategy,
            "metric": self.block.metric_for_best, "candidates": cands, "chosen": self.chosen,
            "fixed": {f: getattr(self.fixed, f) for f in self.fields},
            "trials": [{k: r[k] for k in ("name", "rung", "values", "steps", "fraction", "seconds", "dev")}
                       for r in self.records],
            "fractions": self.fractions(), "shortened": {str(k): v for k, v in self.shrunk.items()},
            "seconds": round(self.spent_s(), 3), "budget": self.block.sweep_budget,
            "budget_s": self.budget_s(), "full_estimate_s": self.full_estimate_s(), "full_train_s": full_train_s,
            "trained_now": self.trained_now, "stopped": self.stopped, "compare_fixed": compare,
        }


def _values(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {x:g}" if isinstance(x, float) else f"{k} {x}" for k, x in v.items())


def section(m: dict[str, Any], doc: Any) -> None:
    """The trial table (values, rung, steps, dev metric [95% CI], seconds, outcome), the chosen values, the budget
    and, with compare_fixed, the test gain over the fixed block with its paired interval."""
    s = m.get("lr_search")
    if not s:
        return
    metric = s["metric"]
    pct = metric != "loss"

    def dev(d: dict) -> str:
        if pct:
            return f"{100 * d['value']:.1f} [{100 * d['ci'][0]:.1f}, {100 * d['ci'][1]:.1f}]"
        return f"{d['value']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"

    what = ("learning_rate: auto" if s["auto"] else "sweep") + f" over {', '.join(s['fields'])}"
    if not s["trials"] and len(s["candidates"]) == 1:
        doc.p(f"Sweep ({what}): one candidate, {_values(s['chosen'])}, so no trials.")
        return
    how = ("successive halving (the better half goes on with twice the steps)" if s["strategy"] == "halving"
           else "one short trial each")
    doc.p(f"Hyperparameter sweep ({what}): {len(s['candidates'])} candidates, {how}, all with the same seed, "
          f"selected on dev data only (an early rung keeps the candidates with the lowest dev loss, the last "
          f"ranks on dev {metric}). Trials: {', '.join(f'{f:.0%}' for f in s['fractions'])} of each "
          f"candidate's full steps per rung"
          + "".join(f" (rung {r} shortened to {f:.1%} to fit the budget)" for r, f in (s.get("shortened") or {}).items())
          + f"; {s['seconds']:.0f} s in all against a budget of "
          + (f"{s['budget_s']:.0f} s ({s['budget']:g}× the estimated {s['full_estimate_s']:.0f} s of one full "
             "training)" if s.get("budget_s") else f"{s['budget']:g}× one full training")
          + (f"; the full training then took {s['full_train_s']:.0f} s" if s.get("full_train_s") else "")
          + (f". {s['stopped'][0].upper()}{s['stopped'][1:]}." if s.get("stopped") else "."))
    unit = f"dev {metric} %" if pct else f"dev {metric}"
    rows = [[_values(t["values"]), str(t["rung"]), f"{t['steps']:,} ({t['fraction']:.0%})", dev(t["dev"]),
             f"{t['dev']['loss']:.3f}" if t["dev"].get("loss") is not None else "—", f"{t['seconds']:.0f}"]
            for t in s["trials"]]
    rows += [[_values(c["values"]), "—", "—", "not tried (budget)", "—", "—"] for c in s["candidates"]
             if c["status"].startswith("not tried")]
    doc.table(["candidate", "rung", "steps", f"{unit} [95% CI]", "dev loss", "seconds"], rows)
    doc.p(f"Chosen: {_values(s['chosen'])} (the fixed block would use {_values(s['fixed'])}).")
    c = s.get("compare_fixed")
    if c:
        g = c["gain"]["accuracy"]
        if c["same_config"]:
            doc.p(f"Test gain over {_values(c['fixed'])}: none by construction — the sweep chose the fixed values "
                  f"(test accuracy {100 * c['chosen_accuracy']:.1f}%).")
        else:
            doc.p(f"Test accuracy ({c['n']:,} rows): chosen {100 * c['chosen_accuracy']:.1f}% "
                  f"[{100 * c['chosen_accuracy_ci'][0]:.1f}, {100 * c['chosen_accuracy_ci'][1]:.1f}] vs "
                  f"{_values(c['fixed'])} {100 * c['fixed_accuracy']:.1f}% [{100 * c['fixed_accuracy_ci'][0]:.1f}, "
                  f"{100 * c['fixed_accuracy_ci'][1]:.1f}]: gain {100 * g['diff']:+.1f} points, paired bootstrap "
                  f"95% interval [{100 * g['ci'][0]:+.1f}, {100 * g['ci'][1]:+.1f}], p={g['p_value']:.3f}.")
