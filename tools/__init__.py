"""Offline tools: corpus, tokenizer, pretraining and the artifact manifest of turnout's models.

Run ``python -m tools --help``. Nothing here is imported by the server at request time except
``tools.manifest.file_digests`` / ``verify_digests`` (checksums of a model directory).
"""
