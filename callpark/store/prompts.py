"""Spoken prompts in etcd: an admin's replacements per pool, over the shipped ones.

A prompt is a whole 8 kHz WAV of at most 256 KiB, so it is one value (one chunk, in
the music's terms) at ``blobs/prompts/<pool>/<name>``; setting one is a single
transaction that also checks the pool exists, clearing deletes the pool's key(s).
Prompts a pool has not replaced are the shipped ones (``callpark/data/prompts/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from callpark.errors import NotFound, StoreDataError, ValidationError
from callpark.model.prompts import PROMPT_NAMES, check_name, validate_prompt
from callpark.store.kv import KV, Compare, Delete, Put
from callpark.store.schema import Keys

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"


@dataclass(frozen=True)
class PromptInfo:
    """One prompt as ``prompts show`` lists it."""

    name: str
    source: str  # "pool" (an admin's replacement) or "shipped"
    size: int
    duration_s: float


def read_prompt_file(path: Path) -> bytes:
    """Read a file the operator names, with a one-line error if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError("prompt-file", f"cannot read prompt file {str(path)!r}: {exc.strerror}") from None


def shipped() -> dict[str, bytes]:
    """The shipped prompts by name (a missing file is an installation error)."""
    out = {}
    for name in PROMPT_NAMES:
        try:
            out[name] = (SHIPPED_DIR / f"{name}.wav").read_bytes()
        except OSError as exc:
            raise StoreDataError(str(SHIPPED_DIR), f"shipped prompt {name}.wav unreadable: {exc.strerror}") from None
    return out


def set_prompt(kv: KV, pool: str, name: str, data: bytes) -> float:
    """Store ``data`` as ``pool``'s prompt ``name``; returns its duration. Nothing is written on error."""
    check_name(name)
    duration = validate_prompt(data)
    pool_exists = Compare(Keys.pool(pool), "version", ">", 0)
    if not kv.txn([pool_exists], [Put(Keys.prompt(pool, name), data)]).succeeded:
        raise NotFound(f"pool {pool!r} does not exist")
    return duration


def clear(kv: KV, pool: str, name: str | None = None) -> None:
    """Go back to the shipped prompt ``name`` (every prompt when None) for ``pool``."""
    if name is None:
        kv.txn([], [Delete(Keys.pool_prompts(pool), prefix=True)])
    else:
        kv.txn([], [Delete(Keys.prompt(pool, check_name(name)))])


def overrides(kv: KV) -> dict[str, dict[str, bytes]]:
    """Every pool's replaced prompts: pool -> name -> WAV. Values that are not valid prompts are skipped."""
    out: dict[str, dict[str, bytes]] = {}
    for key, entry in kv.get_prefix(Keys.PROMPTS).entries.items():
        pool, _, name = key[len(Keys.PROMPTS) :].partition("/")
        if name not in PROMPT_NAMES:
            continue
        try:
            validate_prompt(entry.value)
        except ValidationError:
            continue
        out.setdefault(pool, {})[name] = entry.value
    return out


def effective(kv: KV, pool: str) -> dict[str, bytes]:
    """The prompts ``pool`` speaks: its replacements over the shipped ones."""
    return {**shipped(), **overrides(kv).get(pool, {})}


def show(kv: KV, pool: str, pools: set[str]) -> list[PromptInfo]:
    """Every prompt of ``pool`` with where it comes from."""
    if pool not in pools:
        raise NotFound(f"pool {pool!r} does not exist")
    mine = overrides(kv).get(pool, {})
    out = []
    for name, data in {**shipped(), **mine}.items():
        out.append(PromptInfo(name, "pool" if name in mine else "shipped", len(data), validate_prompt(data)))
    return out
