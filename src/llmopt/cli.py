"""Command line: thin — parse, build the config, call the library. User errors exit 2, no traceback."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

from llmopt.errors import LlmoptError

DEFAULT_RECIPE = Path("recipes/default.yaml")


def _split_recipe(args: list[str]) -> tuple[Path, list[str]]:
    """The first argument without '=' is the recipe; the rest are key=value overrides."""
    if args and "=" not in args[0]:
        return Path(args[0]), args[1:]
    bad = [a for a in args[1:] if "=" not in a]
    if bad:
        raise LlmoptError(f"'{bad[0]}': overrides look like stages.<id>.<field>=value, and the recipe comes first.")
    return DEFAULT_RECIPE, args


def cmd_run(ns: argparse.Namespace) -> int:
    from llmopt import console
    from llmopt.pipeline import run_recipe

    recipe, overrides = _split_recipe(ns.args)
    console.configure(verbose=ns.verbose)
    run_dir = run_recipe(recipe, overrides, Path(ns.runs_dir), ns.resume, argv=sys.argv, allow_pickle=ns.allow_pickle)
    from llmopt import distributed

    if distributed.is_main():  # under torchrun: rank 0 alone
        _print_results(run_dir)
    return 0


def _print_results(run_dir: Path) -> None:
    """The results table of the last evaluate stage, then where the report and the run are."""
    from llmopt.console import results_table

    table = results_table(run_dir) if (run_dir / "stages").is_dir() else None
    if table:
        print("\n" + table + "\n")
    report = run_dir / "report" / "report.html"
    print(f"report: {report.resolve()}" if report.is_file() else f"run directory: {run_dir.resolve()}")


def cmd_validate(ns: argparse.Namespace) -> int:
    from llmopt.recipe import load_recipe

    recipe_path, overrides = _split_recipe([ns.recipe, *ns.overrides])
    recipe = load_recipe(recipe_path, overrides, allow_pickle=ns.allow_pickle)
    print(f"{recipe_path}: OK — recipe '{recipe.name}', {len(recipe.stages)} stages: "
          + ", ".join(f"{s.id} ({s.type})" for s in recipe.stages))
    return 0


def cmd_stages(ns: argparse.Namespace) -> int:
    from llmopt.errors import did_you_mean
    from llmopt.stages import STAGES
    from llmopt.stages.base import Input
    from llmopt.training.config import KDConfig, TrainConfig

    blocks = {TrainConfig: "train", KDConfig: "kd"}
    names = [ns.type] if ns.type else list(STAGES)
    if ns.type and ns.type not in STAGES:
        raise LlmoptError(f"unknown stage type '{ns.type}'{did_you_mean(ns.type, STAGES)}. Known: {', '.join(STAGES)}.")
    used: list[type] = []
    for name in names:
        cls = STAGES[name].config
        print(f"{name}: {(cls.__doc__ or '').strip()}")
        for field, info in cls.model_fields.items():
            if field == "type":
                continue
            default = info.get_default(call_default_factory=True)
            if type(default) in blocks:  # a shared block: its fields are listed once, below
                used.append(type(default))
                own = default.model_dump(exclude_unset=True)
                print(f"  {field}: the shared `{blocks[type(default)]}:` block (below)"
                      + (f"; this stage's defaults: {_show(own)}" if own else ""))
                continue
            shown = "required" if info.is_required() else f"default {_show(default)}"
            desc = f" — {info.description}" if info.description else ""
            marker = next((m for m in info.metadata if isinstance(m, Input)), None)
            kind = _INPUT_NAMES[marker.kind] if marker else _type_name(info.annotation)
            print(f"  {field}: {kind} ({shown}){desc}")
        print()
    for block, key in blocks.items():
        if block in used:
            print(f"{key}: {(block.__doc__ or '').strip()}")
            for field, info in block.model_fields.items():
                desc = f" — {info.description}" if info.description else ""
                print(f"  {field}: {_type_name(info.annotation)} (default {_show(info.get_default())}){desc}")
            print()
    return 0


def _show(value: object) -> str:
    dump = getattr(value, "model_dump", None)
    return repr(dump(mode="json") if dump else value)


_INPUT_NAMES = {"stage": "stage id", "model": "model (stage id, folder or {builtin: minilm})", "file": "file path"}


def _type_name(ann: object) -> str:
    from llmopt.stages.base import Input

    marker = next((m for m in getattr(ann, "__metadata__", ()) if isinstance(m, Input)), None)
    if marker is not None:
        return _INPUT_NAMES[marker.kind]
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:  # a constrained type (Annotated[float, Field(gt=0)]): its base type
        return _type_name(typing.get_args(ann)[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin is not None and typing.get_args(ann):
        args = [_type_name(a) for a in typing.get_args(ann)]
        if origin in (typing.Union, types.UnionType):
            return " | ".join(args)
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(args)}]"
    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        return "{" + ", ".join(f"{k}: {_type_name(v.annotation)}" for k, v in ann.model_fields.items()) + "}"
    return getattr(ann, "__name__", str(ann)).replace("NoneType", "null")


def cmd_report(ns: argparse.Namespace) -> int:
    from llmopt.report.render import build_report
    from llmopt.rundir import check_run_dir

    run_dir = _find_run(Path(ns.run_dir))
    build_report(run_dir)
    _print_results(run_dir)
    return 0


def cmd_review(ns: argparse.Namespace) -> int:
    from llmopt.review.server import ReviewSession, serve

    if ns.folds < 2:
        raise LlmoptError(f"--folds {ns.folds}: out-of-fold probabilities need at least 2 folds.")
    run_dir = _find_run(Path(ns.run_dir))
    session = ReviewSession(run_dir, reviewer=ns.reviewer, train_stage=ns.train_stage, method=ns.labelcheck,
                            folds=ns.folds)
    if ns.export is not None:
        from llmopt.review.export import export

        c = export(session, Path(ns.export) if ns.export else None)
        s = session.summary()
        print(f"review: {s['reviewed']} of {s['items']} items reviewed ({s['labels_changed']} relabelled, "
              f"{s['texts_edited']} edited, {s['rejected']} rejected)")
        if "train_rows" in c:
            print(f"{c['out']}/train.jsonl: {c['train_rows']} rows of stage '{c['train_stage']}' "
                  f"({c['train_changed']} changed, {c['train_dropped']} dropped); dev/test.jsonl, labels.json")
        print(f"{c['out']}/reviewed.jsonl: {c['reviewed_rows']} rows; sft.jsonl: {c['sft_rows']} edited drafts")
        return 0
    serve(session, port=ns.port, open_browser=ns.open)
    return 0


def _find_run(path: Path) -> Path:
    """A run directory, or the latest run in a folder of runs (runs/<name>/) — saying so."""
    from llmopt.errors import RunDirError
    from llmopt.rundir import check_run_dir

    if (path / "recipe.resolved.yaml").is_file() or not path.is_dir():
        return check_run_dir(path)
    runs = sorted(p for p in path.iterdir() if (p / "recipe.resolved.yaml").is_file())
    nested = sorted(p for p in path.glob("*/*") if (p / "recipe.resolved.yaml").is_file())
    if not runs and len({p.parent for p in nested}) == 1:  # runs/ with one recipe's runs in it
        runs = nested
    if runs:
        print(f"llmopt: {path} is a folder of {len(runs)} run(s); using the latest, {runs[-1]}", file=sys.stderr)
        return runs[-1]
    if nested:
        listing = ", ".join(sorted({str(p.parent) for p in nested}))
        raise RunDirError(f"{path} holds runs of several recipes; name one: {listing} (its latest run is used) "
                          "or a run directory under it.")
    return check_run_dir(path)


def build_parser() -> argparse.ArgumentParser:
    from llmopt import __version__

    p = argparse.ArgumentParser(prog="llmopt", description="Fine-tune, compress and evaluate models from one recipe.")
    p.add_argument("--version", action="version", version=f"llmopt {__version__}")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="run a recipe (default: recipes/default.yaml)")
    r.add_argument("args", nargs="*", metavar="[RECIPE] [stages.<id>.<field>=value ...]")
    r.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR (or, with no value, the latest run of this recipe); done stages are skipped")
    r.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs/)")
    r.add_argument("--allow-pickle", action="store_true",
                   help="accept *.bin/*.pt weights, loaded with torch.load(weights_only=True); default: safetensors only")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="also show library warnings, progress bars and the Trainer's logs (always in run.log)")
    r.set_defaults(fn=cmd_run)
    v = sub.add_parser("validate", help="check a recipe without loading models or data")
    v.add_argument("recipe")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--allow-pickle", action="store_true", help="accept pickle-only model folders, as `run` does")
    v.set_defaults(fn=cmd_validate)
    s = sub.add_parser("stages", help="list stage types with their fields, types and defaults")
    s.add_argument("type", nargs="?", help="show only this stage type")
    s.set_defaults(fn=cmd_stages)
    rep = sub.add_parser("report", help="rebuild the report of a run directory")
    rep.add_argument("run_dir", help="a run directory, or runs/<name>/ for its latest run")
    rep.set_defaults(fn=cmd_report)
    rv = sub.add_parser("review", help="review doubtful labels, wrong predictions, conflicts and drafts in a web page")
    rv.add_argument("run_dir", help="a run directory, or runs/<name>/ for its latest run")
    rv.add_argument("--export", nargs="?", const="", default=None, metavar="OUT",
                    help="write the reviewed data (default OUT: RUN_DIR/review/export/) instead of serving the page")
    rv.add_argument("--reviewer", default="reviewer", help="name stored with each decision (the page can change it)")
    rv.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    rv.add_argument("--open", action="store_true", help="open the page in the default browser")
    rv.add_argument("--train-stage", default=None, metavar="ID",
                    help="the stage whose train split is checked for label errors (default: the fine-tune's data)")
    rv.add_argument("--labelcheck", choices=["tfidf", "minilm", "none"], default="tfidf",
                    help="out-of-fold model for the label-error ranking (default: TF-IDF + logistic regression)")
    rv.add_argument("--folds", type=int, default=5, help="folds for the out-of-fold probabilities")
    rv.set_defaults(fn=cmd_review)
    from llmopt.serve.command import add_parser as add_serve

    add_serve(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from llmopt.runtime import offline_env

    offline_env()  # before anything imports huggingface_hub, which reads these once
    parser = build_parser()
    # overrides may also follow options: `run r.yaml --resume DIR stages.x.epochs=1`
    ns, extra = parser.parse_known_args(argv)
    if ns.command is None:  # bare `llmopt`
        parser.print_help()
        return 2
    if ns.command == "run":
        if ns.resume and "=" in ns.resume:  # `--resume stages.x=1`: the flag took an override as its value
            extra.insert(0, ns.resume)
            ns.resume = "latest"
        overrides = [e for e in extra if "=" in e and not e.startswith("-")]
        ns.args += overrides
        extra = [e for e in extra if e not in overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return ns.fn(ns)
    except LlmoptError as e:
        print(f"llmopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmopt: interrupted; rerun with --resume to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
