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
    assert "learning_rate: float (default 2e-05)" in out
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
