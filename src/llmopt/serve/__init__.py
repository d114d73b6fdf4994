"""`llmopt serve`: an OpenAI-compatible HTTP server for the models llmopt produces (see serve.app)."""
