"""Helpers shared by the tools that write an artifact directory (finetune, merge)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tools.manifest import MANIFEST_NAME


def prepare_output(out: str | Path) -> Path:
    """An empty ``out``. A previous artifact there (it has a manifest) is replaced; any other non-empty
    directory is refused, so a typo cannot wipe unrelated files."""
    path = Path(out).resolve()
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{str(path)!r} exists and is not a directory")
        if any(path.iterdir()):
            if not (path / MANIFEST_NAME).is_file():
                raise FileExistsError(f"refusing to replace {str(path)!r}: it is not empty and holds no "
                                      f"{MANIFEST_NAME}")
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_readable(root: Path) -> None:
    """Some writers (safetensors) create private files; an artifact is meant to be read by a server user."""
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def require_model_dir(path: str | Path, what: str) -> Path:
    root = Path(path)
    if not (root / "config.json").is_file():
        raise ValueError(f"{what} {str(root)!r} is not a model directory (no config.json)")
    return root


def require_adapter_dir(path: str | Path, what: str = "adapter") -> Path:
    root = Path(path)
    if not (root / "adapter_config.json").is_file():
        raise ValueError(f"{what} {str(root)!r} is not a LoRA adapter directory (no adapter_config.json)")
    return root


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a reply: the generation config's EOS ids, the tokenizer's EOS and, for chat
    templates, the end-of-turn marker."""
    ids: list[int] = []
    candidates = [getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id]
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    for value in (*candidates, end_of_turn):
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return ids


def pad_token_id(tokenizer, stops: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return stops[0] if stops else 0
