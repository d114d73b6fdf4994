import re
import subprocess
import sys
from pathlib import Path

from llmopt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "llmopt.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_validate_ok(capsys):
    assert main(["validate", str(ROOT / "recipes/default.yaml")]) == 0
    assert "OK" in capsys.readouterr().out


def test_user_error_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("version: 1\nname: x\nstages:\n  - id: a\n    type: dta\n")
    out = _cli("validate", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"{bad}:5" in out.stderr and "did you mean 'data'" in out.stderr


def test_missing_recipe_file(tmp_path):
    out = _cli("run", str(tmp_path / "nope.yaml"), "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and "recipe file not found" in out.stderr and "Traceback" not in out.stderr


def test_report_on_non_run_dir(tmp_path):
    out = _cli("report", str(tmp_path))
    assert out.returncode == 2 and "not an llmopt run directory" in out.stderr


def test_stages_lists_fields_with_defaults(capsys):
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    for stage in ("data:", "finetune:", "evaluate:", "report:"):
        assert stage in out
    assert "learning_rate: float | 'auto' (default 2e-05)" in out
    assert out.count("learning_rate: float") == 1  # the shared train block is listed once
    assert "teacher: model (stage id, folder or {builtin: minilm}) (required)" in out
    assert "scheduler: 'linear' | 'cosine' | 'constant' (default 'linear')" in out


def test_overrides_may_follow_resume(monkeypatch):
    seen = {}

    def fake_run(recipe, overrides, runs_root, resume, argv=None, allow_pickle=False):
        seen.update(recipe=str(recipe), overrides=overrides, resume=resume)
        return runs_root / "x"

    import llmopt.pipeline

    monkeypatch.setattr(llmopt.pipeline, "run_recipe", fake_run)
    assert main(["run", "r.yaml", "--resume", "runs/a", "stages.ft.epochs=1"]) == 0
    assert seen == {"recipe": "r.yaml", "overrides": ["stages.ft.epochs=1"], "resume": "runs/a"}
    assert main(["run", "r.yaml", "--resume", "stages.ft.epochs=2", "seed=3"]) == 0
    assert seen == {"recipe": "r.yaml", "overrides": ["stages.ft.epochs=2", "seed=3"], "resume": "latest"}
    assert main(["run", "--resume"]) == 0
    assert seen == {"recipe": "recipes/default.yaml", "overrides": [], "resume": "latest"}


def test_bare_llmopt_prints_usage(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: llmopt") and "run" in out and "validate" in out


def test_version(capsys):
    import pytest

    from llmopt import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"llmopt {__version__}"


def test_override_typo_is_blamed_on_the_command_line(capsys):
    recipe = str(ROOT / "recipes/default.yaml")
    assert main(["validate", recipe, "stages.distill.vocab_trm=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmopt: error: override 'stages.distill.vocab_trm=false': unknown key 'vocab_trm' "
                          "(did you mean 'vocab_trim'?)")
    assert "default.yaml" not in err and len(err.splitlines()) == 1
    assert main(["validate", recipe, "stages.finetune.train.epochs=abc"]) == 2
    assert capsys.readouterr().err.startswith("llmopt: error: override 'stages.finetune.train.epochs=abc': ")
    assert main(["validate", recipe, "seeed=1"]) == 2
    assert "override 'seeed=1': unknown key 'seeed' (did you mean 'seed'?)" in capsys.readouterr().err


def test_source_forms_are_not_mixed(capsys):
    assert main(["validate", str(ROOT / "recipes/default.yaml"), "stages.data.source.path=/x"]) == 2
    err = capsys.readouterr().err
    assert "override 'stages.data.source.path=/x': `source` takes either `builtin:` or `path:`/`train:`" in err
    assert "not keys of both (got builtin, path)" in err and "did you mean 'path'" not in err


def test_yaml_error_names_where_an_unclosed_bracket_opened(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_text("version: 1\nname: x\nstages:\n  - id: a\n    type: data\n    source: {builtin: x\n  - id: b\n")
    assert main(["validate", str(bad)]) == 2
    assert re.search(rf"{re.escape(str(bad))}:7: invalid YAML .* starts at line 6", capsys.readouterr().err)


def test_report_takes_the_latest_run_of_a_folder_of_runs(tmp_path, monkeypatch, capsys):
    import llmopt.report.render

    built = []
    monkeypatch.setattr(llmopt.report.render, "build_report", lambda run_dir: built.append(run_dir))
    for name in ("tiny/20260101-000000-aaaaaa", "tiny/20260102-000000-bbbbbb"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "recipe.resolved.yaml").write_text("name: tiny\n")
    assert main(["report", str(tmp_path / "runs/tiny")]) == 0
    assert built == [tmp_path / "runs/tiny/20260102-000000-bbbbbb"]
    assert "using the latest" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "runs")]) == 0  # one recipe's runs: still unambiguous
    assert built[-1] == tmp_path / "runs/tiny/20260102-000000-bbbbbb"
    (tmp_path / "runs/other/20260103-000000-cccccc").mkdir(parents=True)
    (tmp_path / "runs/other/20260103-000000-cccccc/recipe.resolved.yaml").write_text("name: other\n")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "runs of several recipes" in err and "runs/other" in err and "runs/tiny" in err
