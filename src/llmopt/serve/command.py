"""The `llmopt serve` subcommand: its arguments and what it calls (kept here so cli.py stays one line per command)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llmopt.errors import LlmoptError


def add_parser(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="serve a model (or a run's best model) over an OpenAI-compatible HTTP API")
    sv.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                    help="a model folder, a GGUF file, or a run directory (its recommended or last model)")
    sv.add_argument("--stage", default=None, metavar="ID", help="in a run directory: serve this stage's model")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key-env", default=None, metavar="VAR",
                    help="require `Authorization: Bearer <key>` with the key read from environment variable VAR")
    sv.add_argument("--max-batch", type=int, default=32, help="most texts merged into one classify call")
    sv.add_argument("--batch-wait-ms", type=float, default=5.0,
                    help="how long a classify request waits for others to share its batch (default 5 ms)")
    sv.add_argument("--no-batching", action="store_true", help="one model call per classify request")
    sv.add_argument("--max-tokens-limit", type=int, default=1024, help="largest max_tokens a request may ask for")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    sv.add_argument("--threads", type=int, default=None,
                    help="CPU threads for the model (default: all cores, at most 8)")
    sv.add_argument("--allow-pickle", action="store_true", help="accept *.bin/*.pt weights (weights_only loading)")
    sv.set_defaults(fn=cmd_serve)


def cmd_serve(ns: argparse.Namespace) -> int:
    from llmopt.serve.app import serve
    from llmopt.serve.models import resolve_target

    api_key = None
    if ns.api_key_env:
        api_key = os.environ.get(ns.api_key_env)
        if not api_key:
            raise LlmoptError(f"--api-key-env {ns.api_key_env}: that environment variable is not set or empty; "
                              f"export {ns.api_key_env}=<key> first.")
    for flag, value, least in (("--max-batch", ns.max_batch, 1), ("--max-tokens-limit", ns.max_tokens_limit, 1),
                               ("--max-body-bytes", ns.max_body_bytes, 1)):
        if value < least:
            raise LlmoptError(f"{flag} {value}: must be at least {least}.")
    if not 0 < ns.port < 65536:
        raise LlmoptError(f"--port {ns.port}: give a port between 1 and 65535.")
    path, why = resolve_target(Path(ns.model), ns.stage)
    threads = ns.threads or min(8, os.cpu_count() or 1)
    serve(path, host=ns.host, port=ns.port, threads=threads, allow_pickle=ns.allow_pickle, why=why, api_key=api_key,
          max_body_bytes=ns.max_body_bytes, max_tokens_limit=ns.max_tokens_limit, batching=not ns.no_batching,
          max_batch=ns.max_batch, batch_wait_ms=ns.batch_wait_ms)
    return 0
