"""WordNet through nltk's reader: nltk's own `wordnet` corpus if present, else Debian's `wordnet-base`.

Debian ships the WordNet 3.0 database files in /usr/share/wordnet but not the `lexnames` file nltk's reader
opens first, and nltk's `map_wn` would look for version-mapping data that is not there. So the files are
copied into a cached copy with `lexnames` written next to it, `map_wn` returns None (same version, nothing to
map), and the copy is added to `nltk.data.path` so other nltk code finds it too.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

DEBIAN_WORDNET = Path("/usr/share/wordnet")
INSTALL_HINT = ("install WordNet: `sudo apt-get install wordnet-base` (Debian/Ubuntu; `make install` does it as "
                "root) or `python -m nltk.downloader wordnet`")

# WordNet 3.0's lexicographer files: index, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv)
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    """The 45-line `lexnames` file of WordNet 3.0 (tab-separated: index, name, category)."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def debian_copy(source: Path = DEBIAN_WORDNET, cache: Path | None = None) -> Path:
    """A cached folder `<cache>/nltk_data/corpora/wordnet` holding copies of Debian's files, with `lexnames` added."""
    from llmopt.fsutil import atomic_write_text
    from llmopt.llm import cache_dir

    root = Path(cache or cache_dir()) / "nltk_data"
    folder = root / "corpora" / "wordnet"
    folder.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        link = folder / f.name
        if f.is_file() and not link.exists():
            # a copy (30 MB, once): nltk's path checks refuse symlinks leaving its root and hard links alike
            tmp = link.with_name(f".{f.name}.tmp{os.getpid()}")
            shutil.copyfile(f, tmp)
            os.replace(tmp, link)
    if not (folder / "lexnames").is_file():
        atomic_write_text(folder / "lexnames", lexnames_text())
    return folder


def _debian_reader(folder: Path) -> Any:
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class DebianWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:  # no mapping data ships with Debian's files
            return None

    root = str(folder.parent.parent)
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    import warnings

    with warnings.catch_warnings():  # "multilingual functions are not available": no OMW, as expected
        warnings.simplefilter("ignore")
        return DebianWordNet(str(folder), None)


@functools.lru_cache(maxsize=4)
def load_wordnet(debian: Path = DEBIAN_WORDNET, prefer_nltk: bool = True) -> Any:
    """An nltk WordNet reader: nltk's own corpus when installed, else Debian's folder; DataError with the
    install command when neither is there."""
    if prefer_nltk:
        import nltk

        try:
            nltk.data.find("corpora/wordnet")
            from nltk.corpus import wordnet

            wordnet.ensure_loaded()
            return wordnet
        except LookupError:
            pass
    if (Path(debian) / "data.noun").is_file():
        return _debian_reader(debian_copy(Path(debian)))
    from llmopt.errors import DataError

    raise DataError(f"WordNet not found (no nltk `wordnet` corpus, no {debian}/data.noun); {INSTALL_HINT}.")
