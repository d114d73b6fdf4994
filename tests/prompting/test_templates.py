"""Templates: strict undefined variables, sandboxing, few-shot turns or inline examples, no label leak."""

from __future__ import annotations

import pytest

from llmopt.errors import DataError, RecipeError
from llmopt.prompting.templates import PromptTemplate

WORDS = {"negative": "bad", "positive": "good"}


def tpl(template: str, **kw) -> PromptTemplate:
    return PromptTemplate(name="v", template=template, label_words=WORDS, **kw)


def test_renders_text_labels_context_and_system():
    t = tpl("{{ context }} Answer {{ labels }}. {{ text }}", system="You judge {{ label_list | length }} labels.",
            context="Movie reviews.")
    msgs = t.messages({"text": "a fine film", "label": "positive"}, [])
    assert msgs == [{"role": "system", "content": "You judge 2 labels."},
                    {"role": "user", "content": "Movie reviews. Answer bad, good. a fine film"}]


def test_missing_row_field_is_a_data_error_naming_it():
    t = tpl("{{ title }}: {{ text }}")
    assert t.messages({"text": "x", "title": "T", "label": "negative"}, [])[-1]["content"] == "T: x"
    with pytest.raises(DataError, match="row 3 has no field 'title'"):
        t.messages({"text": "x", "label": "negative"}, [], where="row 3")


def test_missing_attribute_is_an_error_not_an_empty_string():
    t = tpl("{{ meta.source }} {{ text }}")
    with pytest.raises(DataError, match="source"):
        t.messages({"text": "x", "meta": {}}, [])


def test_template_without_text_unset_option_label_leak_and_syntax_are_recipe_errors():
    with pytest.raises(RecipeError, match="never uses"):
        tpl("Answer {{ labels }}")
    with pytest.raises(RecipeError, match="sets no `context:`"):
        tpl("{{ context }} {{ text }}")
    with pytest.raises(RecipeError, match="the answer itself"):
        tpl("{{ text }} ({{ label }})")
    with pytest.raises(RecipeError, match="syntax error"):
        tpl("{{ text ")


def test_sandbox_blocks_python_internals():
    t = tpl("{{ text.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises((RecipeError, DataError)):
        t.messages({"text": "x"}, [])


def test_examples_become_turns_with_answer_words_or_inline():
    ex = [{"text": "great", "label": "positive"}, {"text": "awful", "label": "negative"}]
    turns = tpl("Review: {{ text }}").messages({"text": "q", "label": "positive"}, ex)
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in turns] == ["Review: great", "good", "Review: awful", "bad", "Review: q"]
    inline = tpl("{% for e in examples %}{{ e.text }} => {{ e.label }}\n{% endfor %}{{ text }} =>")
    msgs = inline.messages({"text": "q", "label": "positive"}, ex)
    assert msgs == [{"role": "user", "content": "great => good\nawful => bad\nq =>"}]
