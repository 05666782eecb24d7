"""Offline tools: corpus, tokenizer, pretraining, fine-tuning (LoRA/QLoRA/full), merging, and the artifact
manifest of turnout's models.

Run ``python -m tools --help``. Nothing here is imported by the server; the manifest checks its model loaders
run at load live in ``backends.artifact``, which this package shares.
"""
