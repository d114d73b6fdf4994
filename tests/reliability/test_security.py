"""Nothing executes from loaded files, the report escapes data, and no run touches the network."""

import json
import re
import socket
from pathlib import Path

import pytest

from llmopt.errors import LlmoptError, ModelError
from llmopt.pipeline import run_recipe
from tests.conftest import make_rows, write_jsonl

SRC = Path(__file__).resolve().parents[2] / "src" / "llmopt"


def _pickle_model(tmp_path: Path, tiny_bert: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_bert.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save(load_file(tiny_bert / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def _recipe(tmp_path: Path, data: Path, model: Path) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(
        "version: 1\nname: sec\nthreads: 1\nstages:\n"
        f"  - {{id: data, type: data, source: {{path: {data}}}}}\n"
        f"  - {{id: ft, type: finetune, model: {model}, train: {{epochs: 1, batch_size: 16, max_length: 32}}}}\n"
    )
    return p


def test_pickle_weights_refused_without_flag_and_loaded_weights_only_with_it(tmp_path, tiny_bert, tiny_data):
    folder = _pickle_model(tmp_path, tiny_bert)
    recipe = _recipe(tmp_path, tiny_data, folder)
    with pytest.raises(LlmoptError, match=r"pickle format \(pytorch_model.bin\).*--allow-pickle"):
        run_recipe(recipe, runs_root=tmp_path / "runs")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs", allow_pickle=True)
    assert (run_dir / "stages/01-ft/artifacts/model/model.safetensors").is_file()


def test_allow_pickle_reaches_every_stage_that_loads_a_model(tmp_path, tiny_bert, tiny_data):
    folder = _pickle_model(tmp_path, tiny_bert)
    config = json.loads((folder / "config.json").read_text())  # a teacher for this data: its labels
    config["id2label"], config["label2id"] = {"0": "negative", "1": "positive"}, {"negative": 0, "positive": 1}
    (folder / "config.json").write_text(json.dumps(config))
    quick = "train: {max_steps: 2, batch_size: 16, max_length: 32}"
    recipe = tmp_path / "compress.yaml"
    recipe.write_text(
        "version: 1\nname: secc\nthreads: 1\nstages:\n"
        f"  - {{id: data, type: data, source: {{path: {tiny_data}}}}}\n"
        f"  - {{id: student, type: distill, teacher: {folder}, layers: [1], {quick}}}\n"
        f"  - {{id: pruned, type: prune, model: {folder}, ffn_keep: 0.5}}\n"
        f"  - {{id: int8, type: quantize, model: {folder}, max_length: 32}}\n"
    )
    with pytest.raises(LlmoptError, match=r"--allow-pickle"):
        run_recipe(recipe, runs_root=tmp_path / "runs")
    run_dir = run_recipe(recipe, runs_root=tmp_path / "runs", allow_pickle=True)
    for stage in ("01-student", "02-pruned", "03-int8"):
        assert (run_dir / "stages" / stage / "DONE").is_file(), stage
    artifacts = [f for f in run_dir.glob("stages/*/artifacts/**/*") if f.is_file()]
    assert artifacts and not [f for f in artifacts if f.suffix in (".bin", ".pt", ".pth", ".pkl")]


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/llmopt-pwned",))


def test_malicious_pickle_never_executes_even_with_flag(tmp_path, tiny_bert):
    import torch

    from llmopt.models import load_classifier

    folder = _pickle_model(tmp_path, tiny_bert)
    torch.save({"x": _Evil()}, folder / "pytorch_model.bin")
    Path("/tmp/llmopt-pwned").unlink(missing_ok=True)
    with pytest.raises(ModelError, match="refused to load"):
        load_classifier(folder, allow_pickle=True)
    assert not Path("/tmp/llmopt-pwned").exists()


def test_source_never_enables_remote_code_or_unsafe_yaml():
    text = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    assert not re.search(r"trust_remote_code\s*=\s*True", text)
    assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text)
    assert not re.search(r"torch\.load\((?![^)]*weights_only=True)", text)


def test_report_escapes_text_from_data(tmp_path, tiny_bert):
    rows = [{"text": f"<img src=x onerror=alert(1)> row {i}", "label": "<script>alert(1)</script>" if i % 2 else "ok"}
            for i in range(40)]
    data = write_jsonl(tmp_path / "evil.jsonl", rows)
    p = tmp_path / "r.yaml"
    p.write_text(
        "version: 1\nname: xss\nthreads: 1\nstages:\n"
        f"  - {{id: data, type: data, source: {{path: {data}}}}}\n"
        f"  - {{id: ev, type: evaluate, models: ['{tiny_bert}'], latency_runs: 10, warmup: 1, throughput_batches: 1}}\n"
        "  - {id: report, type: report}\n"
    )
    run_dir = run_recipe(p, runs_root=tmp_path / "runs")
    html = (run_dir / "report/report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower() and "<img" not in html.lower()


def test_a_run_makes_no_network_connection(tmp_path, tiny_bert, tiny_data, monkeypatch):
    attempts = []

    def refuse(self, address, *a, **k):
        if isinstance(address, tuple):  # an internet socket; unix sockets are local
            attempts.append(address)
            raise OSError("network disabled in this test")
        return real_connect(self, address, *a, **k)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a) or (_ for _ in ()).throw(OSError("no")))
    p = tmp_path / "r.yaml"
    p.write_text(
        "version: 1\nname: net\nthreads: 1\nstages:\n"
        f"  - {{id: data, type: data, source: {{path: {tiny_data}}}}}\n"
        f"  - {{id: ft, type: finetune, model: {tiny_bert}, train: {{epochs: 1, batch_size: 16, max_length: 32}}}}\n"
        "  - {id: ev, type: evaluate, models: [ft], latency_runs: 10, warmup: 1, throughput_batches: 1}\n"
        "  - {id: report, type: report}\n"
    )
    run_dir = run_recipe(p, runs_root=tmp_path / "runs")
    assert (run_dir / "report/report.html").is_file()
    assert attempts == []
    metrics = json.loads((run_dir / "stages/02-ev/metrics.json").read_text())
    assert "ft" in metrics["models"]
