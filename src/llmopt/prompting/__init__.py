"""Prompt engineering with statistics: Jinja templates, few-shot selection, backends, an on-disk call cache and
repeated runs with intervals. The prompt stage (stages/prompt.py) composes these."""
