"""The report: a reader of the stages' metrics.json, rendered to Markdown and self-contained HTML."""
