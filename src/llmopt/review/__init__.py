"""Human review of a run's doubtful items: sources (what to review), store (decisions in SQLite), server (the page
and its API), export (reviewed data back into a recipe). `llmopt review RUN_DIR` ties them together."""
