"""Music upload when a chunk write's outcome is unknown (the store never resends a write itself)."""

from __future__ import annotations

from collections.abc import Sequence

from callpark.errors import StoreIndeterminate
from callpark.model import admin
from callpark.store import music
from callpark.store.admin import AdminStore
from callpark.store.kv import Compare, Op, Put, TxnResult
from callpark.store.memkv import MemoryKV
from tests.wavs import pcm_wav


class AppliesThenTimesOut(MemoryKV):
    """Applies the first ``times`` chunk puts, then reports a time-out as if the answer was lost."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.left = times
        self.timed_out = 0

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        result = super().txn(compares, success, failure)
        is_chunk = any(isinstance(op, Put) and "/blobs/moh/" in op.key for op in success)
        if is_chunk and self.left > 0:
            self.left -= 1
            self.timed_out += 1
            raise StoreIndeterminate("txn: deadline exceeded (the write may have applied)")
        return result


def test_a_chunk_write_that_timed_out_having_applied_is_sent_again_and_the_music_lands() -> None:
    kv = AppliesThenTimesOut(times=2)
    store = AdminStore(kv)
    store.change(lambda s: admin.new_pool(s, "pool-a", "site-a"))
    data = pcm_wav(seconds=40.0)  # several 256 KiB chunks
    meta = music.upload(store, "pool-a", data, "hold.wav")
    assert kv.timed_out == 2 and meta.chunks > 1
    _, fetched = music.fetch(store, "pool-a")
    assert fetched == data
