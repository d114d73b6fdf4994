"""What the user sees while a recipe runs: one live line per stage, one result line after it, a results table.

While a run holds the console (`capture`), library output — Python warnings, `logging` records, tqdm bars,
the Trainer's logs — goes to run.log in the run directory; `llmopt run --verbose` shows it on the terminal
too. On a terminal the live line is a rich Progress line on stderr; elsewhere (pipes, CI, tests) it
degrades to plain `[llmopt] ` lines with no escape codes.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

# progress/task: the live line of the running stage (moved by `training_callback`)
_state: dict[str, Any] = {"progress": None, "task": None, "verbose": False, "session": None}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_lock = threading.RLock()


def configure(verbose: bool = False) -> None:
    """`--verbose`: library output reaches the terminal as well as run.log, and the live line gives way to plain lines."""
    _state["verbose"] = verbose


class _Session:
    """The run's console: the real stderr, run.log, and the stage whose line is showing."""

    def __init__(self, term: TextIO, log: TextIO, live: bool, utf8: bool) -> None:
        self.term, self.log, self.live = term, log, live
        self.ok, self.bad = ("✓", "✗") if utf8 else ("ok", "FAILED")
        self.rich: Any = None
        self.stage: tuple[str, float] | None = None  # (id, start time) of the running stage
        if live:
            from rich.console import Console

            self.rich = Console(file=term, highlight=False)

    def to_log(self, line: str) -> None:
        line = _ANSI.sub("", line.rsplit("\r", 1)[-1]).rstrip()  # a tqdm bar: its last state only
        if line and not self.log.closed:
            self.log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.log.flush()

    def emit(self, line: str, style: str | None = None) -> None:
        """A status line on the terminal (above the live line) and in run.log."""
        with _lock:
            self.to_log(line)
            if self.rich is not None:
                target = _state["progress"].console if _state["progress"] is not None else self.rich
                target.print(line, style=style, markup=False, soft_wrap=True)
            else:
                self.term.write(f"[llmopt] {line}\n")
                self.term.flush()


class _LogStream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr during a run: whole lines go to run.log, and with --verbose the
    text reaches the terminal too. After the run it passes everything through (handlers may keep it)."""

    def __init__(self, session: _Session, original: TextIO, echo: bool) -> None:
        self.session, self.original, self.echo, self.buf, self.active = session, original, echo, "", True

    def write(self, s: str) -> int:
        if not self.active:
            return self.original.write(s)
        with _lock:
            if self.echo:
                self.original.write(s)
            *lines, self.buf = (self.buf + s).split("\n")
            for line in lines:
                self.session.to_log(line)
        return len(s)

    def flush(self) -> None:
        if not self.active or self.echo:
            self.original.flush()

    def finish(self) -> None:
        with _lock:
            if self.buf:
                self.session.to_log(self.buf)
            self.buf, self.active = "", False

    def isatty(self) -> bool:
        return self.echo and self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"


def _stream_handlers() -> Iterator[logging.StreamHandler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for lg in loggers:
        for h in getattr(lg, "handlers", ()):
            if type(h) is logging.StreamHandler:  # not files, not a test runner's capture handlers
                yield h


@contextmanager
def capture(run_dir: Path) -> Iterator[None]:
    """Hold the console for a run: library output to run_dir/run.log, stage lines on stderr."""
    import importlib.util

    from rich.console import Console

    verbose = _state["verbose"]
    term, out = sys.stderr, sys.stdout
    probe = Console(file=term)
    # a live line only on a real terminal (FORCE_COLOR in a CI log would otherwise animate it there)
    live = _isatty(term) and probe.is_terminal and not probe.is_dumb_terminal and not verbose
    log = open(Path(run_dir) / "run.log", "a", encoding="utf-8")
    session = _Session(term, log, live, "utf" in (getattr(term, "encoding", None) or "utf-8").lower())
    err_s, out_s = _LogStream(session, term, verbose), _LogStream(session, out, verbose)
    swap = {id(term): err_s, id(out): out_s}
    moved = [(h, h.stream) for h in _stream_handlers() if id(h.stream) in swap]
    for h, s in moved:  # handlers made before the run (transformers, datasets, basicConfig) write to run.log
        h.setStream(swap[id(s)])
    root = logging.StreamHandler(err_s)  # records that reach the root logger (onnxruntime's quantizer)
    root.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(root)
    shown = warnings.showwarning

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        err_s.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show  # also under a test runner that records warnings
    if not verbose and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # its C++ warnings go straight to fd 2: errors only
    _state["session"] = session
    sys.stderr, sys.stdout = err_s, out_s
    try:
        session.to_log(f"llmopt run in {run_dir} ({'verbose' if verbose else 'library output here only'})")
        yield
    except BaseException as e:
        _stop_live()
        if session.stage is not None:
            sid, t0 = session.stage
            what = "stopped" if isinstance(e, KeyboardInterrupt) else "failed"
            session.emit(f"{session.bad} {sid:<10} {what:>10}   after {_dur(time.perf_counter() - t0)}", style="red")
        raise
    finally:
        _stop_live()
        sys.stderr, sys.stdout = term, out
        warnings.showwarning = shown
        logging.getLogger().removeHandler(root)
        for h in _stream_handlers():  # handlers made during the run point at the stand-ins: give them the real streams
            if h.stream is err_s or h.stream is out_s:
                h.setStream(h.stream.original)
        err_s.finish()
        out_s.finish()
        _state["session"] = None
        log.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def note(msg: str) -> None:
    """A line for the user: above the live line during a run, a plain `[llmopt]` line otherwise."""
    session = _state["session"]
    if session is not None:
        session.emit(msg)
    else:
        print(f"[llmopt] {msg}", file=sys.stderr, flush=True)


def stage_started(label: str, stage_id: str) -> None:
    """Show the live line of a stage (label: '[2/7] finetune (finetune)')."""
    session = _state["session"]
    if session is None:
        return note(f"{label}: running")
    _stop_live()
    session.stage = (stage_id, time.perf_counter())
    if not session.live:
        return session.emit(f"{label} …")
    from rich.progress import BarColumn, Progress, TextColumn

    session.to_log(f"{label} …")
    progress = Progress(
        _Spinner(), TextColumn("{task.description}"), _IfTotal(BarColumn(bar_width=20)), _Steps(), _Eta(),
        TextColumn("{task.fields[metric]}"), _Elapsed(session.stage[1]),
        console=session.rich, transient=True, redirect_stdout=False, redirect_stderr=False, refresh_per_second=4,
    )
    short = label.replace(f" ({stage_id})", "")  # '[4/7] prune', not '[4/7] prune (prune)': 80 columns
    _state["progress"], _state["task"] = progress, progress.add_task(short, total=None, metric="")
    progress.start()


def stage_done(stage_id: str, seconds: float, metrics: dict) -> None:
    """Replace the live line with the stage's result line: '✓ finetune  98 s  dev acc 79.1%'."""
    _stop_live()
    session = _state["session"]
    mark = session.ok if session else "✓"
    line = f"{mark} {stage_id:<10} {_dur(seconds):>10}   {summary(metrics)}".rstrip()
    if session is not None:
        session.stage = None
        session.emit(line, style="green")
    else:
        note(line)


def stage_skipped(stage_id: str, stage_dir: Path) -> None:
    """The result line of a stage done in an earlier run."""
    from llmopt.fsutil import read_json

    m = Path(stage_dir) / "metrics.json"
    said = summary(read_json(m)) if m.is_file() else ""
    session = _state["session"]
    mark = session.ok if session else "✓"
    line = f"{mark} {stage_id:<10} {'skipped':>10}   (done earlier)  {said}".rstrip()
    if session is not None:
        session.emit(line, style="dim")
    else:
        note(line)


def _stop_live() -> None:
    progress = _state["progress"]
    _state["progress"] = _state["task"] = None
    if progress is not None:
        progress.stop()


def training_callback() -> Any | None:
    """A TrainerCallback that moves the current stage's live line and logs the Trainer's records to run.log."""
    session = _state["session"]
    if session is None:
        return None
    from transformers import TrainerCallback

    stage = session.stage[0] if session.stage else "training"

    class _Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if _state["progress"] is not None:
                _state["progress"].reset(_state["task"], total=state.max_steps, completed=state.global_step, metric="")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if _state["progress"] is not None:
                _state["progress"].update(_state["task"], completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if logs:  # run.log; with --verbose on the terminal too
                line = f"trainer {stage} step {state.global_step}: {json.dumps(logs, default=float)}"
                (session.emit if _state["verbose"] else session.to_log)(line)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
            if not metrics or "eval_accuracy" not in metrics:
                return
            said = f"dev acc {100 * metrics['eval_accuracy']:.1f}%"
            if _state["progress"] is not None:
                _state["progress"].update(_state["task"], metric=said)
            elif not session.live:
                line = f"  {stage}: step {state.global_step}/{state.max_steps}  {said}"
                if line != self.last:  # a stage's own final evaluate() repeats the last epoch's line
                    session.emit(line)
                self.last = line

        last = ""

    return _Progress()


def _column(render: Any) -> Any:
    from rich.progress import ProgressColumn

    class Col(ProgressColumn):
        def render(self, task: Any) -> Any:
            return render(task)

    return Col()


def _Spinner() -> Any:
    """Spins while the stage runs, also after its training's bar is full (saving, final evaluation)."""
    from rich.spinner import Spinner

    spinner = Spinner("dots", style="green")
    return _column(lambda task: spinner.render(time.monotonic()))


def _IfTotal(inner: Any) -> Any:
    """A column shown only for a stage that knows its total (training): others have no bar."""
    from rich.text import Text

    return _column(lambda task: inner.render(task) if task.total else Text(""))


def _Steps() -> Any:
    from rich.text import Text

    return _column(lambda t: Text(f"{int(t.completed)}/{int(t.total)} steps") if t.total else Text(""))


def _Eta() -> Any:
    from rich.text import Text

    def render(t: Any) -> Any:
        left = t.time_remaining
        if not t.total or left is None or t.finished:
            return Text("")
        return Text(f"ETA {int(left) // 60}:{int(left) % 60:02d}", style="cyan")

    return _column(render)


def _Elapsed(t0: float) -> Any:
    """Time since the stage started (a training's reset of the bar does not restart it)."""
    from rich.text import Text

    def render(t: Any) -> Any:
        s = int(time.perf_counter() - t0)
        return Text(f"{s // 60}:{s % 60:02d}", style="yellow")

    return _column(render)


def _dur(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 100:
        return f"{seconds:.0f} s"
    return f"{int(seconds) // 60} min {int(seconds) % 60:02d} s"


def _mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}" if n >= 1e5 else f"{n / 1e6:.2f}"


def summary(m: dict) -> str:
    """What a stage's metrics.json says in a few words, for its result line."""
    parts: list[str] = []
    rows = m.get("rows")
    if isinstance(rows, dict) and all(isinstance(v, int) for v in rows.values()):
        parts.append(" · ".join(f"{v:,} {k}" for k, v in rows.items()))
    if m.get("dev_accuracy") is not None:
        parts.append(f"dev acc {100 * m['dev_accuracy']:.1f}%")
    if m.get("dev_perplexity") is not None:  # a causal-LM fine-tune
        parts.append(f"dev perplexity {m['dev_perplexity']:.2f}")
    if m.get("student_params"):
        parts.append(f"{m['student_params'] / 1e6:.1f}M params")
    if m.get("params_after") and m.get("params_before"):
        parts.append(f"{m['params_before'] / 1e6:.1f}M → {m['params_after'] / 1e6:.1f}M params")
    if m.get("scheme") and m.get("weights_bytes"):
        agree = m.get("agreement_with_fp32")
        parts.append(f"{m['scheme']}  {_mb(m['weights_bytes'])} MB"
                     + (f"  {100 * agree:.1f}% agree with fp32" if agree is not None else ""))
    if m.get("chosen"):
        parts.append(f"chose {m['chosen']}")
    models = m.get("models")
    if isinstance(models, dict) and m.get("n"):
        kinds = [e.get("kind") for e in models.values() if isinstance(e, dict)]
        n_models, n_base = kinds.count("model"), len(kinds) - kinds.count("model")
        parts.append(f"{n_models} model{'s' * (n_models != 1)} + {n_base} baseline{'s' * (n_base != 1)} "
                     f"on {m['n']:,} {m.get('split', 'test')} rows")
    causal = (m.get("causal") or {}).get("models")
    if isinstance(causal, dict) and causal:
        parts.append(f"{len(causal)} causal LM{'s' * (len(causal) != 1)}")
    if m.get("html"):
        parts.append("report.html + report.md")
    return "   ".join(parts)


def results_table(run_dir: Path) -> str | None:
    """The last evaluate stage as a short table: accuracy (95% CI), p50, size, ×smaller/×faster than the
    reference, speed gate. None when the run has no finished evaluate stage."""
    from llmopt.compression.gate import size_of
    from llmopt.rundir import stage_metrics

    evals = [(sid, m) for sid, kind, m in stage_metrics(run_dir)
             if kind == "evaluate" and (m.get("models") or (m.get("causal") or {}).get("models"))]
    if not evals:
        return None
    sid, ev = evals[-1]
    if not ev.get("models"):
        return "\n".join(_causal_lines(sid, ev))
    models: dict = ev["models"]
    ref_name = ev.get("reference")
    ref = models.get(ref_name, {})
    order = sorted(models, key=lambda k: models[k].get("kind") != "model")  # models first, then baselines
    head = ["model", "accuracy (95% CI)", "p50 ms", "size MB", "×smaller", "×faster", "speed gate"]
    rows = [head]
    for name in order:
        e = models[name]
        acc, ci = e.get("accuracy"), e.get("accuracy_ci")
        acc_s = "–" if acc is None else f"{100 * acc:.1f}%" + (
            f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
        p50, size = e.get("latency_b1_p50_ms"), size_of(e)
        ratios = e.get("kind") == "model" or e.get("weights_bytes") is not None  # not majority / TF-IDF
        smaller = f"{size_of(ref) / size:.1f}" if ratios and size and size_of(ref) else "–"
        faster = (f"{ref['latency_b1_p50_ms'] / p50:.1f}" if ratios and p50 and ref.get("latency_b1_p50_ms")
                  else "–")
        rows.append([name + (" (ref)" if name == ref_name else ""), acc_s, "–" if p50 is None else f"{p50:.2f}",
                     _mb(size), smaller, faster, _gate(e.get("gate")) if e.get("gate") else
                     ("teacher's int8 export" if name.endswith("-ort-int8") else
                      "baseline" if e.get("kind") == "baseline" else "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {2, 3, 4, 5}
    lines = [f"Results of '{sid}' on {ev.get('n', 0):,} {ev.get('split', 'test')} rows "
             f"(×smaller, ×faster: than {ref_name}; p50: batch-1 latency)"]
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    try:  # the report's answer, in one line
        from llmopt.report.answer import recommend

        rec = recommend(ev)
        lines.append(f"Recommended: {rec['name']} — {rec['reason'].rstrip('.')}. The report gives the rule.")
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass
    return "\n".join(lines + _causal_lines(sid, ev))


def _causal_lines(sid: str, ev: dict) -> list[str]:
    """The evaluate stage's causal LMs: perplexity (95% CI), prefill / decode tokens/s, size, label accuracy."""
    models = (ev.get("causal") or {}).get("models") or {}
    if not models:
        return []
    rows = [["causal model", "runtime", "perplexity (95% CI)", "prefill tok/s", "decode tok/s", "size MB", "accuracy"]]
    for name, e in models.items():
        ci, cls = e.get("ppl_ci"), e.get("classification") or {}
        rows.append([Path(name).name if "/" in name else name, str(e.get("runtime", "")),
                     f"{e['ppl']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") if e.get("ppl") else "–",
                     f"{e['prefill_tok_s']:.0f}" if e.get("prefill_tok_s") else "–",
                     f"{e['decode_tok_s']:.1f}" if e.get("decode_tok_s") else "–", _mb(e.get("size_bytes")),
                     f"{100 * cls['accuracy']:.1f}%" if cls.get("accuracy") is not None else "–"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"Causal LMs in '{sid}' (batch 1, greedy; perplexity token-weighted over windows)"]
    for r in rows:
        lines.append("  " + "  ".join(c.rjust(w) if i in {3, 4, 5} else c.ljust(w)
                                      for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return lines


def _gate(g: dict) -> str:
    """'✓ vs distill' (faster and smaller than its parent) or '✗ vs distill: not faster, not smaller'."""
    if g.get("passed"):
        return f"✓ vs {g.get('parent')}"
    why = [] if g.get("faster") else ["slower" if g.get("verdict") == "slower" else
                                      "speed not measured" if g.get("verdict") == "not measured" else "not faster"]
    if not g.get("smaller"):
        why.append("not smaller")
    return f"✗ vs {g.get('parent')}: {', '.join(why)}"


info = note  # the older name
