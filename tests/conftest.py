import os
from pathlib import Path

import pytest
import torch

from tests.models import KINDS, make_random_model, make_tokenizer

torch.set_num_threads(2)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    from server.cli import default_model_dir

    # A developer may point the suite at another model directory; CI uses the bundled one.
    path = Path(os.environ.get("TURNOUT_TEST_MODEL_DIR") or default_model_dir())
    if not (path / "config.json").exists():
        pytest.fail(f"the bundled model is missing at {path}; rebuild it with `make model`")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def random_models(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: make_random_model(kind, root / kind, tokenizer_dir) for kind in KINDS}
