"""Music on hold in etcd: content-addressed chunks plus metadata in the admin config.

Upload writes the chunks first (each below etcd's request limit), then commits the
metadata in the admin transaction with a compare that every chunk still exists, so
a reader that follows the metadata always finds a complete, checksummed file. Old
chunks are removed afterwards; a crash in between leaves only unreferenced chunks,
which the next upload for that pool removes.

A fetch reads the file one chunk (one key, at most :data:`CHUNK_BYTES`) a request, so
no response grows with the file (music up to 8 MiB is over gRPC's default 4 MiB
message). Chunks are content-addressed and never rewritten, so reading them one by one
is as consistent as one read: a chunk removed meanwhile (the music was replaced) is
missing, and the fetch starts again from the metadata.
"""

from __future__ import annotations

from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from callpark.errors import NotFound, StoreConflict, StoreDataError, StoreIndeterminate, ValidationError
from callpark.model import admin
from callpark.model.music import CHUNK_BYTES, MohMeta, default_music, sha256_hex, split_chunks, validate_wav
from callpark.store.admin import AdminStore
from callpark.store.kv import Compare, Delete, Put, unchanged
from callpark.store.records import parse_moh_meta
from callpark.store.schema import Keys

DEFAULT_MUSIC_PATH = Path(__file__).resolve().parent.parent / "data" / "default-moh.wav"


def read_music_file(path: Path) -> bytes:
    """Read a file the operator names, with a one-line error if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError("moh-file", f"cannot read music file {str(path)!r}: {exc.strerror}") from None


def upload(store: AdminStore, pool: str, data: bytes, filename: str) -> MohMeta:
    """Validate and store ``data`` as ``pool``'s music; the old music stays until the commit."""
    info = validate_wav(data)
    if pool not in store.state().pools:
        raise NotFound(f"pool {pool!r} does not exist")
    digest = sha256_hex(data)
    chunks = split_chunks(data, CHUNK_BYTES)
    meta = MohMeta(pool, digest, len(data), len(chunks), info.sample_rate, info.duration_s, filename)
    for attempt in range(3):
        for index, chunk in enumerate(chunks):
            _put_chunk(store, Keys.moh_chunk(pool, digest, index), chunk)
        present = [Compare(Keys.moh_chunk(pool, digest, i), "version", ">", 0) for i in range(len(chunks))]
        try:
            store.change(lambda s: admin.moh_set(s, meta), extra_compares=present)
        except StoreConflict:
            if attempt == 2:
                raise
            continue
        break
    collect_garbage(store, pool)
    return meta


@retry(
    retry=retry_if_exception_type(StoreIndeterminate),
    stop=stop_after_attempt(3),
    wait=wait_random_exponential(multiplier=0.1, max=1.0),
    reraise=True,
)
def _put_chunk(store: AdminStore, key: str, chunk: bytes) -> None:
    """Write one content-addressed chunk. A put that timed out having applied wrote the same
    bytes under the same key, so resending it is safe (the store itself never resends writes)."""
    store.kv.txn([], [Put(key, chunk)])


def reset(store: AdminStore, pool: str) -> None:
    """Go back to the default music for ``pool``."""
    store.change(lambda s: admin.moh_reset(s, pool))
    collect_garbage(store, pool)


def collect_garbage(store: AdminStore, pool: str) -> int:
    """Delete chunks of ``pool`` that the current metadata does not reference.

    Each delete is guarded by the metadata key being unchanged since it was read, so
    a concurrent upload that just committed its chunks never loses them.
    """
    meta_entry = store.kv.get(Keys.moh_meta(pool))
    keep = None
    if meta_entry is not None:
        try:
            keep = Keys.moh_blob(pool, parse_moh_meta(meta_entry.key, meta_entry.value).sha256)
        except StoreDataError:
            return 0  # malformed metadata: delete nothing, the next upload rewrites it
    meta_rev = meta_entry.mod_revision if meta_entry else 0
    prefix = Keys.moh_pool_blobs(pool)
    stale = sorted({k.rsplit("/", 1)[0] + "/" for k in store.kv.get_prefix(prefix).entries} - {keep})
    removed = 0
    for blob in stale:
        if not store.kv.txn([unchanged(Keys.moh_meta(pool), meta_rev)], [Delete(blob, prefix=True)]).succeeded:
            break
        removed += 1
    return removed


def fetch(store: AdminStore, pool: str) -> tuple[MohMeta | None, bytes]:
    """The pool's music bytes (checksum verified) or the default music when none is set."""
    for _ in range(3):
        meta = store.state().moh.get(pool)
        if meta is None:
            return None, default_music_bytes()
        data = _read_chunks(store, pool, meta)
        if data is not None and sha256_hex(data) == meta.sha256:
            return meta, data
    raise StoreDataError(Keys.moh_meta(pool), "music chunks are missing or do not match the checksum")


def _read_chunks(store: AdminStore, pool: str, meta: MohMeta) -> bytes | None:
    """The file's chunks, one request each, joined; None if one is missing."""
    parts = []
    for index in range(meta.chunks):
        entry = store.kv.get(Keys.moh_chunk(pool, meta.sha256, index))
        if entry is None:
            return None
        parts.append(entry.value)
    return b"".join(parts)


def default_music_bytes() -> bytes:
    """The shipped default music (generated by :func:`callpark.model.music.default_music`)."""
    try:
        return DEFAULT_MUSIC_PATH.read_bytes()
    except OSError:
        return default_music()
