"""Errors a user can cause. The CLI prints them as one message and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmoptError(Exception):
    """A problem with the user's input: the message says what, where and what to do."""


class RecipeError(LlmoptError):
    """The recipe file or an override is invalid."""


class DataError(LlmoptError):
    """A data file is malformed or does not fit the task."""


class ModelError(LlmoptError):
    """A model folder is missing or unusable."""


class RunDirError(LlmoptError):
    """The run directory is missing, foreign or inconsistent."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
