"""Benchmarks: `serve_bench` drives any OpenAI-compatible server; `engine_bench` compares our server with
plain Hugging Face generation on one workload. Run them from the repository root with `python -m bench.<name>`."""
