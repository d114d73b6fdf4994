"""Prompt templates in a sandboxed Jinja environment with strict undefined variables.

A variant renders one user turn per row. Its template may use `text` (the row's text), `labels` (the answer
words, comma-separated), `label_list` (the same as a list), `context` and `output_format` (the variant's own
strings), `examples` (the few-shot examples as [{text, label}]: a template that loops over them shows them
inline; otherwise each example becomes a user/assistant turn before the query) and any other field of the row.
A field the template uses that is missing is an error naming it: a RecipeError when no row could have it, a
DataError naming the row otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmopt.errors import DataError, RecipeError

BUILTIN_FIELDS = ("text", "labels", "label_list", "context", "output_format", "examples")


def _env() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # sandboxed: a recipe's template can read its variables but cannot reach Python internals
    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass
class PromptTemplate:
    """A compiled variant: its user-turn template, optional system prompt, context, output format, label words."""

    name: str
    template: str
    label_words: dict[str, str]
    system: str | None = None
    context: str | None = None
    output_format: str | None = None
    used: set[str] = field(default_factory=set)  # the variables the templates read
    _compiled: Any = None
    _system: Any = None

    def __post_init__(self) -> None:
        from jinja2 import TemplateSyntaxError, meta

        env = _env()
        try:
            ast = env.parse(self.template)
            sys_ast = env.parse(self.system) if self.system else None
        except TemplateSyntaxError as e:
            raise RecipeError(f"prompt variant '{self.name}': template syntax error on line {e.lineno}: {e.message}."
                              ) from None
        self.used = set(meta.find_undeclared_variables(ast))
        if sys_ast is not None:
            self.used |= meta.find_undeclared_variables(sys_ast)
        if "text" not in meta.find_undeclared_variables(ast):
            raise RecipeError(f"prompt variant '{self.name}': the template never uses {{{{ text }}}}, where the row's "
                              "text goes; add it.")
        if "label" in self.used:
            raise RecipeError(f"prompt variant '{self.name}': the template reads {{{{ label }}}}, the answer itself; "
                              "use {{ labels }} (the answer words) instead.")
        for opt in ("context", "output_format"):
            if opt in self.used and getattr(self, opt) is None:
                raise RecipeError(f"prompt variant '{self.name}': the template uses {{{{ {opt} }}}} but the variant "
                                  f"sets no `{opt}:`; set it or remove it from the template.")
        self._compiled = env.from_string(self.template)
        self._system = env.from_string(self.system) if self.system else None

    @property
    def inline_examples(self) -> bool:
        """True when the template shows the examples itself (it reads `examples`)."""
        return "examples" in self.used

    def row_fields(self) -> set[str]:
        """Variables the template reads that must come from each row."""
        return self.used - set(BUILTIN_FIELDS)

    def _vars(self, row: dict[str, Any], examples: list[dict[str, str]]) -> dict[str, Any]:
        words = list(self.label_words.values())
        given = {k: v for k, v in row.items() if k != "label"}  # never the answer
        return {**given, "text": row["text"], "labels": ", ".join(words), "label_list": words,
                "context": self.context, "output_format": self.output_format, "examples": examples}

    def _render(self, tpl: Any, row: dict[str, Any], examples: list[dict[str, str]], where: str) -> str:
        from jinja2 import UndefinedError
        from jinja2.exceptions import SecurityError

        missing = sorted(self.row_fields() - set(row))
        if missing:
            raise DataError(f"prompt variant '{self.name}': {where} has no field {missing[0]!r}, which the template "
                            f"uses; add it to every row or remove it from the template.")
        try:
            return tpl.render(**self._vars(row, examples)).strip()
        except UndefinedError as e:
            raise DataError(f"prompt variant '{self.name}': {where}: {e.message}; the template reads a field the row "
                            "does not have.") from None
        except SecurityError as e:
            raise RecipeError(f"prompt variant '{self.name}': the template is not allowed to do that ({e}).") from None

    def messages(self, row: dict[str, Any], examples: list[dict[str, str]], where: str = "row") -> list[dict]:
        """The chat for one row: system prompt, the few-shot turns (unless the template shows them inline), query.

        `examples` are train rows {text, label}; their labels are shown as this variant's answer words."""
        shown = [{**ex, "label": self.label_words[ex["label"]]} for ex in examples]
        out = []
        if self._system is not None:
            out.append({"role": "system", "content": self._render(self._system, row, shown, where)})
        if not self.inline_examples:
            for i, ex in enumerate(shown):
                out.append({"role": "user", "content": self._render(self._compiled, ex, [], f"example {i}")})
                out.append({"role": "assistant", "content": ex["label"]})
            shown = []
        out.append({"role": "user", "content": self._render(self._compiled, row, shown, where)})
        return out
