"""Two CPU ranks under torchrun (gloo): the run directory is written once, the training matches one process with
the same global batch, and kill -9 of one rank then a rerun resumes from the last checkpoint.

Tolerance on the logged losses: 1e-4 absolute. One process with batch 16 and two ranks with batch 8 each see the
same 16 rows per optimizer step (the same seeded order, split in two), the model has no dropout, and DDP averages
the two halves' gradients — the mean over 16 rows — so only float32 summation order differs (about 1e-7 here).
Anything else (each rank on all the data, other batches, a loss summed over ranks) moves the losses by 1e-3 to 1e-1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llmopt.distributed import launch_problem
from tests.conftest import make_rows, write_jsonl

STEPS = 8  # 64 train rows, global batch 16, 2 epochs
TOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    for k in ("LLMOPT_FAULT", "LLMOPT_FAULT_RANK", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        if k not in extra:
            env.pop(k, None)
    return env


def _run(args: list[str], ranks: int, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                 "--master_port", str(_free_port())] if ranks > 1 else [sys.executable])
    return subprocess.run([*launcher, "-m", "llmopt.cli", "run", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=600)


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "stages/01-finetune/train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _only_run(runs: Path) -> Path:
    found = sorted((runs / "ddp").iterdir())
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> dict:
    """A tiny BERT without dropout, 80 rows, a data → finetune → evaluate recipe; a 1-process run (batch 16) and
    a 2-rank run (batch 8 per rank) of it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("ddp")
    model = root / "tiny-bert"
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(cfg).save_pretrained(str(model))
    tok.save_pretrained(str(model))
    data = write_jsonl(root / "rows.jsonl", make_rows(80))
    recipe = root / "ddp.yaml"
    recipe.write_text(f"""\
version: 1
name: ddp
seed: 3
threads: 1
stages:
  - {{id: data, type: data, source: {{path: {data}}}}}
  - id: finetune
    type: finetune
    model: {model}
    train: {{epochs: 2, batch_size: 8, learning_rate: 3.0e-3, max_length: 32, logging_steps: 1,
             group_by_length: false, early_stopping_patience: null}}
  - {{id: evaluate, type: evaluate, models: [finetune], latency_runs: 10, warmup: 1, throughput_batches: 1,
      max_length: 32}}
""")
    one = _run([str(recipe), "--runs-dir", "runs1", "stages.finetune.train.batch_size=16"], 1, root)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([str(recipe), "--runs-dir", "runs2"], 2, root)
    assert two.returncode == 0, two.stderr[-3000:]
    return {"root": root, "recipe": recipe, "one": _only_run(root / "runs1"), "two": _only_run(root / "runs2"),
            "stderr": two.stderr}


def test_two_ranks_write_the_run_directory_once(setup):
    run = setup["two"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert [i.get("world_size") for i in manifest["invocations"]] == [2]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["action"]) for e in events] == [
        (s, a) for s in ("data", "finetune", "evaluate") for a in ("started", "done")]
    assert len({e["pid"] for e in events}) == 1  # rank 0 alone
    stages = sorted(p.name for p in (run / "stages").iterdir())
    assert stages == ["00-data", "01-finetune", "02-evaluate"]
    assert all((run / "stages" / s / "DONE").is_file() for s in stages)
    lines = (run / "stages/01-finetune/train_log.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert sorted(_losses(run)) == list(range(1, STEPS + 1))  # each step logged once, and the data was split
    assert json.loads((run / "stages/01-finetune/metrics.json").read_text())["global_steps"] == STEPS
    ckpt = run / "stages/01-finetune/checkpoints" / f"checkpoint-{STEPS}"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()  # both ranks trained
    assert (ckpt / "llmopt-checksums.json").is_file()
    tb = run / "stages/01-finetune/tensorboard"
    assert len(list(tb.glob("events.*"))) <= 1
    assert "rank 0 of 2 (backend gloo" in setup["stderr"] and "rank 1 of 2 (backend gloo" in setup["stderr"]
    assert (run / "stages/01-finetune/artifacts/model/model.safetensors").is_file()


def test_two_ranks_train_like_one_process_with_the_same_global_batch(setup):
    one, two = _losses(setup["one"]), _losses(setup["two"])
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    worst = max(abs(one[s] - two[s]) for s in one)
    assert worst < TOL, (worst, one, two)
    assert max(one.values()) - min(one.values()) > 10 * TOL  # the losses move: the comparison can fail


def test_kill_one_rank_then_rerun_resumes_from_the_last_checkpoint(setup, tmp_path):
    runs = ["--runs-dir", str(tmp_path / "runs")]
    crashed = _run([str(setup["recipe"]), *runs], 2, setup["root"], LLMOPT_FAULT="train.step:6",
                   LLMOPT_FAULT_RANK="1")  # rank 1 is SIGKILLed after its 6th optimizer step (epoch 2)
    assert crashed.returncode != 0
    assert "a collective with the other ranks failed" in crashed.stderr or "SIGKILL" in crashed.stderr
    run = _only_run(tmp_path / "runs")
    sdir = run / "stages/01-finetune"
    assert not (sdir / "DONE").exists() and (sdir / "checkpoints/checkpoint-4").is_dir()
    again = _run([str(setup["recipe"]), *runs, "--resume", str(run)], 2, setup["root"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert _only_run(tmp_path / "runs") == run
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert ("finetune", "resumed") in [(e["stage"], e["action"]) for e in events]
    metrics = json.loads((sdir / "metrics.json").read_text())
    assert (metrics["resumed_at_step"], metrics["steps_trained_now"], metrics["global_steps"]) == (4, 4, STEPS)
    resumed = _losses(run)  # steps 5-8 again after the resume: the same losses as the uninterrupted 2-rank run
    ref = _losses(setup["two"])
    assert max(abs(resumed[s] - ref[s]) for s in range(5, STEPS + 1)) < TOL
    assert (sdir / "DONE").is_file() and (run / "stages/02-evaluate/DONE").is_file()


def test_accelerate_cpu_launch_of_one_process_is_refused_clearly():
    asked = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert "started one process" in launch_problem(asked)
    assert launch_problem({**asked, "WORLD_SIZE": "2"}) is None
    assert launch_problem({"ACCELERATE_USE_CPU": "True"}) is None  # `accelerate launch --cpu` of one process


def test_fsdp_option_reaches_training_arguments(tmp_path):
    from pydantic import ValidationError

    from llmopt.training.config import TrainConfig
    from llmopt.training.trainer import _training_args

    with pytest.raises(ValidationError, match="fsdp"):
        TrainConfig(fsdp="full_shard auto_wrap")  # the legacy string form: transformers 5 wants fsdp + fsdp_config
    cfg = TrainConfig(fsdp=True, fsdp_config={"reshard_after_forward": True, "cpu_offload": False,
                                             "transformer_layer_cls_to_wrap": ["BertLayer"]})
    args = _training_args(cfg, output_dir=tmp_path, seed=0, keep_best=False, report_tb=False)
    assert args.fsdp and args.fsdp_config["transformer_layer_cls_to_wrap"] == ["BertLayer"]
    assert args.fsdp_config["reshard_after_forward"] is True
    plain = _training_args(TrainConfig(), output_dir=tmp_path, seed=0, keep_best=False, report_tb=False)
    assert not plain.fsdp


def test_a_message_larger_than_the_store_takes_travels_in_chunks():
    """torch's TCPStore resets the connection on one value of 16 MB (a MiniLM model is ~90 MB): put/take split
    it, and the last reader leaves no key behind."""
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    from llmopt import distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = dist.TCPStore("127.0.0.1", port, 1, True, timeout=timedelta(seconds=30))  # noqa: F841 - keeps it up

    def client():
        return dist.TCPStore("127.0.0.1", port, 1, False, timeout=timedelta(seconds=30))

    data = bytes(range(256)) * (20 * 4096)  # 20 MB
    with pytest.raises(RuntimeError):  # the store's own limit: a reset connection, not a silent truncation
        client().set("whole", data)
    store = client()
    distributed.put(store, "msg/0", data)
    assert int(store.get("msg/0")) == 5  # 4 MB chunks
    assert distributed.take(store, "msg/0", readers=2) == data and store.check(["msg/0"])  # one reader still to come
    assert distributed.take(store, "msg/0", readers=2) == data and not store.check(["msg/0", "msg/0/0"])
