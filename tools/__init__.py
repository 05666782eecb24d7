"""Offline tools: corpus, tokenizer, pretraining, fine-tuning (LoRA/QLoRA/full), merging, and the artifact
manifest of turnout's models.

Run ``python -m tools --help``. Nothing here is imported by the server at request time; at model load it
uses ``tools.manifest.verify_artifact`` (checksums of a model directory against its manifest).
"""
