"""Several processes, one run: `torchrun --nproc_per_node N -m llmopt.cli run RECIPE` (or `accelerate launch
--multi_gpu`) starts N ranks; rank 0 drives the recipe exactly as a single process would (run directory, lock,
stage decisions, every non-training stage, every file), and the other ranks only serve its trainings.

When a stage trains (`training.trainer._run_trainer`), rank 0 sends the training job — model, tokenizer,
datasets, collator, training block, checkpoint folder, the checkpoint to resume from — and every rank builds the
same HF Trainer and runs it with DDP (gloo on CPU, nccl on GPU); the Trainer writes checkpoints from rank 0
only, each rank its own RNG state beside them. Calls rank 0 makes on that trainer afterwards (`evaluate`,
`predict`) are sent too. So stages need no code for several processes, teacher logits are computed once, and
the ranks agree on resume state because only rank 0 decides it.

Messages go through the process group's key-value store (the one torchrun's agent serves), pickled: sending
never blocks rank 0, and a rank that waits for one ends when the launcher stops the group (torchrun stops every
rank when one fails). Several nodes need the runs folder on a filesystem all of them see (checkpoints are read
back by every rank on resume).
"""

from __future__ import annotations

import os
import pickle
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from llmopt.errors import LlmoptError

_state: dict[str, Any] = {"store": None, "sent": 0, "received": 0, "trainer": None}


class DistributedError(LlmoptError):
    """The processes of a distributed launch disagree, or another rank stopped."""


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Processes in this launch (WORLD_SIZE, set by torchrun / accelerate launch; 1 without a launcher)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    return _env_int("RANK", 0)


def active() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0 and in a single process: the one that writes the run directory."""
    return rank() == 0


def timeout_s() -> int:
    """Limit on joining the group and on each collective (LLMOPT_DIST_TIMEOUT_S, default 1800)."""
    return max(1, _env_int("LLMOPT_DIST_TIMEOUT_S", 1800))


def wait_s() -> int:
    """How long a rank waits for rank 0's next message (LLMOPT_DIST_WAIT_S, default 24 h: rank 0 may spend hours
    on stages that do not train). A rank that dies ends the wait at once: the launcher stops the group."""
    return max(1, _env_int("LLMOPT_DIST_WAIT_S", 86400))


def launch_problem(env: dict[str, str] | None = None) -> str | None:
    """Why this process cannot be what the launcher meant, or None.

    `accelerate launch --cpu --num_processes N` (N > 1) starts ONE process: its --cpu launcher runs the script
    once, with MASTER_ADDR/MASTER_PORT but no WORLD_SIZE (it starts N only through mpirun, --mpirun_hostfile).
    """
    env = dict(os.environ if env is None else env)
    mpi = any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"))
    if env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1") and "MASTER_PORT" in env \
            and "WORLD_SIZE" not in env and not mpi:
        return ("`accelerate launch --cpu --num_processes N` started one process (accelerate's --cpu launcher "
                "runs the script once unless --mpirun_hostfile is given): no WORLD_SIZE in this process. Use "
                "`accelerate launch --multi_gpu --num_processes N -m llmopt.cli run ...` (it runs torchrun; "
                "without a GPU the ranks use gloo on the CPU) or `torchrun --nproc_per_node N -m llmopt.cli run ...`.")
    return None


def init() -> None:
    """Join the process group when launched as several ranks; say which rank this is. A no-op in one process."""
    problem = launch_problem()
    if problem:
        raise DistributedError(problem)
    fault_rank = os.environ.get("LLMOPT_FAULT_RANK")
    if fault_rank is not None and fault_rank != str(rank()):
        os.environ.pop("LLMOPT_FAULT", None)  # the crash harness kills one chosen rank
    if not active():
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s()))
        except (RuntimeError, ValueError) as e:  # DistNetworkError / DistStoreError are RuntimeErrors
            raise DistributedError(
                f"rank {rank()} of {world_size()} could not join the process group at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within {timeout_s()} s ({e}). "
                "Check that every rank was started with the same --rdzv_endpoint / MASTER_ADDR:MASTER_PORT.") from None
    seen = dist.get_world_size()
    if seen != world_size() or dist.get_rank() != rank():
        raise DistributedError(f"the launcher set WORLD_SIZE={world_size()} RANK={rank()} but torch.distributed "
                               f"sees rank {dist.get_rank()} of {seen}. Start every rank with the same launcher flags.")
    print(f"[llmopt] rank {rank()} of {seen} (backend {dist.get_backend()}, pid {os.getpid()})",
          file=sys.stderr, flush=True)


def _store() -> Any:
    if _state["store"] is None:
        from torch.distributed import PrefixStore
        from torch.distributed.distributed_c10d import _get_default_store

        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # a torchrun restart starts afresh
        _state["store"] = PrefixStore(f"llmopt/{restart}/", _get_default_store())
    return _state["store"]


def send(message: tuple) -> None:
    """Rank 0: the next message for every other rank (never blocks)."""
    if not active() or not is_main():
        return
    n = _state["sent"]
    _state["sent"] += 1
    put(_store(), f"msg/{n}", pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


# torch's TCPStore (libuv server) drops a connection that sends one value over ~16 MB ("Connection reset by
# peer"); a model in a message is larger (MiniLM: ~90 MB), so values travel in chunks.
CHUNK_BYTES = 4 << 20


def put(store: Any, key: str, data: bytes) -> None:
    """`data` under `key` in chunks: key/0 … key/k-1 first, then `key` = k, so a reader waiting on `key` finds
    every chunk there."""
    chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    for i, c in enumerate(chunks):
        store.set(f"{key}/{i}", c)
    store.set(key, str(len(chunks)))


def take(store: Any, key: str, readers: int) -> bytes:
    """What `put` wrote under `key` (present: wait for it first); the last of `readers` deletes it."""
    k = int(store.get(key))
    data = b"".join(store.get(f"{key}/{i}") for i in range(k))
    if store.add(f"{key}/read", 1) == readers:  # the last reader frees the payload (a model, data)
        for i in range(k):
            store.delete_key(f"{key}/{i}")
        store.delete_key(key)
    return data


def receive() -> tuple:
    """Other ranks: rank 0's next message (waited for up to `wait_s`)."""
    import torch.distributed as dist

    store, n = _store(), _state["received"]
    key = f"msg/{n}"
    try:
        store.wait([key], timedelta(seconds=wait_s()))
    except dist.DistStoreError as e:
        raise DistributedError(f"rank {rank()}: no word from rank 0 within {wait_s()} s (LLMOPT_DIST_WAIT_S), or "
                               f"the connection to the launcher's store was lost ({e})") from None
    _state["received"] += 1
    data = take(store, key, world_size() - 1)
    return pickle.loads(data)  # noqa: S301 - written by rank 0 of this launch, as torch.distributed's own objects


def stop(run_dir: Path | None = None, error: str | None = None) -> None:
    """Rank 0 at the end of a run: the other ranks finish (with rank 0's error, if it failed)."""
    try:
        send(("stop", str(run_dir) if run_dir else None, error))
    except Exception:  # noqa: BLE001 - the group may be gone already (a rank was killed); the launcher ends it
        pass


def serve() -> Path | None:
    """Ranks > 0: run rank 0's trainings until it stops; the run directory rank 0 used."""
    import warnings

    from transformers.utils import logging as hf_logging

    from llmopt.training.trainer import serve_job

    warnings.filterwarnings("ignore")  # library output is rank 0's, once, in run.log
    hf_logging.set_verbosity_error()
    run_dir: Path | None = None
    while True:
        msg = receive()
        kind = msg[0]
        if kind == "run_dir":
            run_dir = Path(msg[1])
            print(f"[llmopt] rank {rank()}: run directory {run_dir}", file=sys.stderr, flush=True)
        elif kind == "train":
            _state["trainer"] = None
            _state["trainer"] = serve_job(msg[1])
        elif kind == "call":  # rank 0 called a collective method of the trainer after training (evaluate)
            _, name, args, kwargs = msg
            getattr(_state["trainer"], name)(*args, **kwargs)
        elif kind == "stop":
            _state["trainer"] = None
            if msg[2]:
                raise DistributedError(f"rank 0 stopped: {msg[2]}")
            return Path(msg[1]) if msg[1] else run_dir
        else:  # pragma: no cover - a newer rank 0
            raise DistributedError(f"rank {rank()}: unknown message {kind!r} from rank 0")


def barrier() -> None:
    """Every rank waits here (a no-op in one process)."""
    if active():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
