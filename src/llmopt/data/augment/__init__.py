"""Data augmentation building blocks: WordNet, EDA operations, back-translation and the label-preservation filter.

The `augment` stage (llmopt.stages.augment) composes them; it is the project's one augmentation implementation
(distill reads its transfer set).
"""
