"""Text normalizers. Each is `fn(text) -> text`; `normalize` runs the enabled ones and names those that changed it."""

from __future__ import annotations

import html as _html
import re
import unicodedata
from collections.abc import Callable

from llmopt.data.curate.config import NormalizeConfig

_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>|<!--.*?-->|<!DOCTYPE[^>]*>", re.S | re.I)
_DROP_BODY = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_BLOCK = re.compile(r"</?(p|div|br|li|ul|ol|tr|td|th|h[1-6]|table|section|article|blockquote)\b[^>]*>", re.I)
_ENTITY = re.compile(r"&(#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

_HEADER = re.compile(r"^(From|To|Cc|Bcc|Subject|Date|Sent|Reply-To|Message-ID|Received|Return-Path|In-Reply-To|"
                     r"References|X-[A-Za-z-]+)\s*:.*$", re.I)
_WROTE = re.compile(r"^\s*On\b.{0,200}\bwrote:\s*$", re.I)
_FORWARD = re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message)\s*-{2,}", re.I)

_INVISIBLE = {"\ufeff", "\u200b", "\u00ad", "\u2060"}
_WS = re.compile(r"\s+")


def fix_mojibake(text: str) -> str:
    """UTF-8 that was decoded as Latin-1/cp1252 ('crÃ¨me' → 'crème'), through ftfy."""
    import ftfy

    return ftfy.fix_encoding(text)


def strip_html(text: str) -> str:
    """Remove tags (block tags become a space, script/style bodies go) and unescape entities."""
    if "<" not in text and "&" not in text:
        return text
    out = _DROP_BODY.sub(" ", text)
    out = _BLOCK.sub(" ", out)
    out = _TAG.sub("", out)
    if _ENTITY.search(out):
        out = _html.unescape(out).replace("\xa0", " ")
    # the spaces that stood in for block tags are part of this step, not a whitespace problem of the text
    return re.sub(r" {2,}", " ", out).strip() if out != text else text


def strip_mail(text: str) -> str:
    """Mail-like text only: drop a leading block of 2+ header lines, '>' quoted lines, 'On … wrote:' and
    everything from an '-----Original Message-----' / forwarded marker on."""
    lines = text.split("\n")
    i = 0
    while i < len(lines) and _HEADER.match(lines[i]):
        i += 1
    if i >= 2:  # one 'Subject: …'-like line alone is not a header block
        lines = lines[i:]
    kept = []
    for line in lines:
        if _FORWARD.match(line):
            break
        if line.lstrip().startswith(">") or _WROTE.match(line):
            continue
        kept.append(line)
    return "\n".join(kept)


def strip_control(text: str) -> str:
    """Drop control characters other than tab/newline/carriage return, and invisible format characters."""
    if text.isprintable():
        return text
    return "".join(c for c in text if c in "\t\n\r" or (unicodedata.category(c) != "Cc" and c not in _INVISIBLE))


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def collapse_whitespace(text: str) -> str:
    return _WS.sub(" ", text).strip()


STEPS: list[tuple[str, Callable[[str], str]]] = [
    ("mojibake", fix_mojibake),
    ("html", strip_html),
    ("mail", strip_mail),
    ("control", strip_control),
    ("nfkc", nfkc),
    ("whitespace", collapse_whitespace),
    ("lowercase", str.lower),
]


def normalize(text: str, cfg: NormalizeConfig) -> tuple[str, list[str]]:
    """The text after every enabled normalizer, and the names of those that changed it."""
    changed = []
    for name, fn in STEPS:
        if getattr(cfg, name):
            new = fn(text)
            if new != text:
                changed.append(name)
                text = new
    return text, changed
