"""Data curation building blocks: normalizers, filters with reasons, exact/near dedup, the streaming engine.

The `curate` stage (llmopt.stages.curate) is a thin wrapper around `engine.curate_artifact`.
"""
