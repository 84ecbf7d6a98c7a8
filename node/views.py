"""The node's view of the cluster: its ranges, the range owners, its settings and music.

:class:`ClusterView` re-reads the admin configuration every ``CONFIG_REFRESH_S`` (or at
once when forced), the owner records of every range, and, to send a park to the pool that
owns what it needs, that pool's members.

Lock: ``config_lock`` serialises configuration refreshes (the loop's, and the forced ones
of park decisions and tests); the fields are replaced whole, so readers take no lock and
see the previous or the next view. ``draining``, ``live_nodes`` and ``last_refresh`` are
also written by the takeover scan (:mod:`~callpark.node.takeover`), on the loop thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path

from callpark.errors import CallparkError, StoreDataError, StoreError
from callpark.model import admin
from callpark.model.orbits import OrbitRange, RangeType
from callpark.model.settings import DEFAULTS, CpsSettings
from callpark.node.announce import AnnouncementFiles
from callpark.node.calls import HeldCalls
from callpark.node.context import NodeContext, NodePart
from callpark.node.workers import WorkerPool
from callpark.store import music as mohstore
from callpark.store import prompts as promptstore
from callpark.store.admin import AdminStore
from callpark.store.records import Owner, RecordKind, parse_members
from callpark.store.schema import Keys

log = logging.getLogger(__name__)

CONFIG_REFRESH_S = 2.0


class ClusterView(NodePart):
    """Ranges this node serves (``ranges``), every CallPark range, owners, settings, music."""

    def __init__(self, ctx: NodeContext, admin_store: AdminStore, workers: WorkerPool, calls: HeldCalls) -> None:
        super().__init__(ctx)
        self.admin = admin_store
        self.workers = workers
        self.calls = calls
        self.config_lock = threading.Lock()
        self.ranges: list[OrbitRange] = []
        self.all_ranges: list[OrbitRange] = []
        self.settings: CpsSettings = DEFAULTS
        self.music_sha: str | None = "unset"
        self.music_path: Path | None = None
        self.music_paths: dict[str, tuple[str | None, Path]] = {}  # every pool's music: pool -> (sha, file)
        self.shipped_prompts = promptstore.shipped()
        self.prompt_overrides: dict[str, dict[str, bytes]] = {}  # pool -> name -> WAV an admin set
        self.announcements = AnnouncementFiles(ctx.config.run_dir / "announce")
        self.last_refresh = 0.0
        self.draining = False
        self.owner_pool: dict[str, str] = {}
        self.live_nodes: dict[str, bool] = {}

    def refresh_config(self, force: bool = False) -> None:
        """Re-read the configuration if it is due (or ``force``); raises only at start-up."""
        with self.config_lock:
            self._refresh_config_locked(force)

    def _refresh_config_locked(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_refresh < CONFIG_REFRESH_S:
            return
        self.last_refresh = now
        try:
            state = self.admin.state()
        except (StoreError, CallparkError) as exc:
            if self._starting(force):
                raise
            log.warning("configuration refresh failed: %s", exc)
            return
        if self.config.pool not in state.pools:
            if self._starting(force):
                raise CallparkError(f"pool {self.config.pool!r} does not exist (create it with 'callpark pool new')")
            log.error("pool %s no longer exists", self.config.pool)
            self.ranges = []
            return
        owners = self.read_owners()
        if owners is not None:
            self.table.owners = owners
        mine = []
        for rng in state.ranges.values():
            owner_pool = self.owner_pool.get(rng.name, rng.pool)
            if rng.type == RangeType.CALL_PARK and owner_pool == self.config.pool:
                mine.append(rng)
        self.ranges = sorted(mine, key=lambda r: r.name)
        self.all_ranges = [r for r in state.ranges.values() if r.type == RangeType.CALL_PARK]
        self.settings = state.effective(self.config.pool)[1]
        self._refresh_music(state)
        self._refresh_prompts()
        self._count_free_orbits()

    def _starting(self, force: bool) -> bool:
        """The forced refresh of :meth:`Supervisor.start`: before any worker, errors stop the start."""
        return force and not self.workers.handles

    def _refresh_music(self, state: admin.AdminState) -> None:
        """Keep every pool's music as a file: a call plays its home pool's music wherever it is held."""
        for pool in sorted(state.pools):
            meta = state.moh.get(pool)
            sha = meta.sha256 if meta else None
            known = self.music_paths.get(pool)
            if known is not None and known[0] == sha:
                continue
            try:
                _, data = mohstore.fetch(self.admin, pool)
            except StoreDataError as exc:  # chunks missing or not matching: keep the music we play
                self.decoder.report(RecordKind.CONFIG, exc.key, 0, exc.problem)
                continue
            if not data:
                continue
            path = self.config.run_dir / f"moh-{sha or 'default'}.wav"
            path.write_bytes(data)
            self.music_paths[pool] = (sha, path)
            if pool == self.config.pool:
                self.music_sha, self.music_path = sha, path
                self.workers.broadcast("music", path=str(path))

    def _refresh_prompts(self) -> None:
        """Re-read the prompts admins replaced (small; only replacements are stored)."""
        try:
            self.prompt_overrides = promptstore.overrides(self.kv)
        except StoreError as exc:
            log.warning("could not read the prompts: %s", exc)

    def home_pool(self, range_name: str) -> str:
        """The pool a range belongs to (its home, whoever serves it now)."""
        rng = next((r for r in self.all_ranges if r.name == range_name), None)
        return rng.pool if rng is not None else self.config.pool

    def home_music(self, range_name: str) -> str | None:
        """The music file of the range's home pool when that is another pool; None for our own
        pool (or unknown): the worker then plays its own music, which follows ``moh set``."""
        home = self.home_pool(range_name)
        known = self.music_paths.get(home)
        if home == self.config.pool or known is None:
            return None
        return str(known[1])

    def announcement(self, orbit: str, range_name: str) -> str | None:
        """The WAV saying "parked on <orbit>" with the prompts of the range's home pool."""
        prompts = {**self.shipped_prompts, **self.prompt_overrides.get(self.home_pool(range_name), {})}
        path = self.announcements.path(orbit, prompts)
        return str(path) if path is not None else None

    def _count_free_orbits(self) -> None:
        taken = {o for o in self.calls.held}
        self.metrics.free_orbits.clear()  # only the ranges our pool serves now
        self.metrics.range_orbits.clear()
        for rng in self.ranges:
            self.metrics.range_orbits.labels(self.config.pool, rng.name).set(rng.size)
            try:
                used = sum(1 for k in self.kv.get_prefix(Keys.PARKED).entries if rng.contains(k.rsplit("/", 1)[1]))
            except StoreError:
                used = sum(1 for o in taken if rng.contains(o))
            self.metrics.free_orbits.labels(self.config.pool, rng.name).set(rng.size - used)

    def owner_elsewhere(self, orbit: str | None) -> str | None:
        """A worker (host:port) of the pool that owns what this park needs, when not us.

        After a failover a pool's nodes may still receive its park and orbit requests
        (the edge routes by home pool); they send them on to the owning pool.
        """
        needs_other = not self.ranges if orbit is None else not any(r.contains(orbit) for r in self.ranges)
        if needs_other:
            # before sending a park away, make sure our view of ownership is current
            self.refresh_owners()
            if not self.kv.unreachable():
                self.refresh_config(force=True)
        if orbit is None:
            if self.ranges:
                return None
            owner = next(iter(sorted(set(self.owner_pool.values()) - {self.config.pool})), None)
        else:
            rng = next((r for r in self.all_ranges if r.contains(orbit)), None)
            if rng is None or any(r.name == rng.name for r in self.ranges):
                return None
            owner = self.owner_pool.get(rng.name, rng.pool)
        if owner is None or owner == self.config.pool:
            return None
        return self._roomiest_worker_of(owner)

    def _roomiest_worker_of(self, pool: str) -> str | None:
        """The worker with the most free slots (two at least) on a ready, undrained node of ``pool``."""
        try:
            members = self.kv.get_prefix(Keys.pool_members(pool)).entries
        except StoreError:
            return None
        best: tuple[int, str] | None = None
        for member in parse_members(members, self.decoder).get(pool, []):
            if not member.ready or member.draining:
                continue
            for worker in member.info.get("workers", []):
                free = int(worker.get("free", 0))
                if free >= 2 and (best is None or free > best[0]):
                    best = (free, str(worker["sip"]))
        return None if best is None else best[1]

    def refresh_owners(self) -> bool:
        """Re-read owner records; True when any changed since the last read."""
        before = dict(self.table.owners)
        owners = self.read_owners()
        if owners is None:
            return False
        self.table.owners = owners
        return owners != before

    def read_owners(self) -> dict[str, tuple[int, int, str]] | None:
        """Owner records by range (mod revision, epoch, pool); None when etcd cannot say."""
        try:
            entries = self.kv.get_prefix(Keys.OWNERS).entries
        except StoreError as exc:
            log.warning("could not read range owners: %s", exc)
            return None
        owners: dict[str, tuple[int, int, str]] = {}
        pools: dict[str, str] = {}
        for entry in entries.values():
            owner = self.decoder.decode(
                RecordKind.OWNER, entry, functools.partial(Owner.from_entry, mod_revision=entry.mod_revision)
            )
            if owner is not None:
                owners[owner.range] = (owner.mod_revision, owner.epoch, owner.pool)
                pools[owner.range] = owner.pool
        self.owner_pool = pools
        return owners
