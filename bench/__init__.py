"""Benchmarks: `serving/` is `turnout bench`, the serving benchmark against any OpenAI-compatible server, and
the load generator the others use; `locustfile.py` is for ops teams' locust runs; `serve_bench` drives one load
level for our own benchmarks; `engine_bench` compares our server with plain Hugging Face generation on one
workload. Run them from the repository root with `python -m bench.<name>`."""
