"""API keys: who may call the server, which models each key may use, and each key's own limits.

Keys come from `--api-key KEY` (one key, as vLLM's flag; or the TURNOUT_API_KEY environment variable) or
from `--api-keys FILE`, a YAML file that stores each key only as a hash::

    keys:
      - name: team-a                  # shows in the access log and metrics instead of the key
        hash: sha256:9f86d0...        # `turnout keys hash` prints it; the key itself is never stored
        models: [turnout-tiny]        # optional: the models (or aliases, adapters) this key may use
        requests_per_minute: 600      # optional limits of this key (server/rate_limits.py)
        tokens_per_minute: 200000

API keys are long random strings, so a plain SHA-256 of the key is enough to store them safely (a slow
password hash protects guessable secrets; a 32-byte random key is not guessable). A presented key is hashed
and compared with every stored hash in constant time, so the comparison's duration says nothing about how
close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import ConfigError

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe."""
    return "tk-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    """What logs and metrics say instead of the key."""
    hash: str
    models: frozenset[str] | None = None
    """The model names this key may use; None: every model."""
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    """Prompt and completion tokens together."""

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


class KeyRing:
    """The server's keys. Empty means no authentication (every request is let in as the anonymous caller)."""

    def __init__(self, keys: list[ApiKey]):
        names = [key.name for key in keys]
        if len(set(names)) != len(names):
            raise ConfigError(f"api key names must be unique, got {names!r}")
        self.keys = keys

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def find(self, presented: str) -> ApiKey | None:
        """The key whose hash matches, or None. Every stored hash is compared, in constant time each."""
        digest = hash_key(presented).encode()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.hash.encode()):
                found = key
        return found

    @classmethod
    def single(cls, key: str) -> KeyRing:
        if not key:
            raise ConfigError("--api-key must not be empty")
        return cls([ApiKey(name="api-key", hash=hash_key(key))])

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read api keys file {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        entries = raw.get("keys") if isinstance(raw, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: expected a `keys:` list with at least one key, got {raw!r}")
        return cls([_parse_key(entry, f"{path}: keys[{i}]") for i, entry in enumerate(entries)])


_FIELDS = {"name", "hash", "models", "requests_per_minute", "tokens_per_minute"}


def _parse_key(entry: Any, where: str) -> ApiKey:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping, got {entry!r}")
    if unknown := set(entry) - _FIELDS:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_FIELDS))}")
    name, digest = entry.get("name"), entry.get("hash")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
    if not (isinstance(digest, str) and digest.startswith(HASH_PREFIX) and len(digest) == len(HASH_PREFIX) + 64):
        raise ConfigError(f"{where}.hash must be `sha256:` and 64 hex digits (`turnout keys hash` prints one), "
                          f"got {digest!r}")
    models = entry.get("models")
    if models is not None and not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
        raise ConfigError(f"{where}.models must be a list of model names, got {models!r}")
    limits = {}
    for field in ("requests_per_minute", "tokens_per_minute"):
        value = entry.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise ConfigError(f"{where}.{field} must be a number > 0, got {value!r}")
        limits[field] = value
    return ApiKey(name=name, hash=digest.lower(), models=None if models is None else frozenset(models), **limits)
