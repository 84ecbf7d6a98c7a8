"""The etcd key schema: every key the project reads or writes is spelt here, once.

Like Patroni's DCS path constants: one constant per prefix and one builder per key, all under
one versioned root (``/callpark/v1/``). Nothing outside :mod:`callpark.store` builds a key by
hand: code that needs a key calls a builder of :class:`Keys` (or reads a prefix constant).

Admin configuration (pools, ranges, settings, music metadata) sits under one ``config/``
prefix so that one range read returns it at one revision; every admin change also rewrites
``config/serial``, which the next change compares.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""The one schema version: of the key root and of every JSON record (``"v"``)."""

APP_PREFIX = "/callpark/"
"""Everything of the project, any schema version (what the etcd role may touch)."""


class Keys:
    """Key prefixes (upper-case constants) and one builder per key (class methods)."""

    ROOT = f"{APP_PREFIX}v{SCHEMA_VERSION}/"
    SCHEMA = ROOT + "schema"
    CONFIG = ROOT + "config/"
    CONFIG_SERIAL = CONFIG + "serial"
    POOLS = CONFIG + "pools/"
    RANGES = CONFIG + "ranges/"
    CPS = CONFIG + "cps/"
    MOH = CONFIG + "moh/"
    MOH_BLOBS = ROOT + "blobs/moh/"
    PROMPTS = ROOT + "blobs/prompts/"
    OWNERS = ROOT + "owners/"
    LEADER = ROOT + "controller/leader"
    EVENTS = ROOT + "events/"
    REQUESTS = ROOT + "requests/"
    DRAIN = ROOT + "drain/"
    MEMBERS = ROOT + "members/"
    PARKED = ROOT + "parked/"
    LRU = ROOT + "lru/"
    HISTORY = ROOT + "history/"
    CHAOS = ROOT + "chaos/"

    # -- configuration --------------------------------------------------------------------------

    @classmethod
    def pool(cls, name: str) -> str:
        """``config/pools/<name>``."""
        return cls.POOLS + name

    @classmethod
    def range(cls, name: str) -> str:
        """``config/ranges/<name>``."""
        return cls.RANGES + name

    @classmethod
    def cps(cls, scope: str) -> str:
        """``config/cps/<scope>``: Call Park settings (global or a site)."""
        return cls.CPS + scope

    @classmethod
    def moh_meta(cls, pool: str) -> str:
        """``config/moh/<pool>``: the metadata of a pool's music."""
        return cls.MOH + pool

    @classmethod
    def moh_pool_blobs(cls, pool: str) -> str:
        """Prefix of every music file's chunks of one pool."""
        return f"{cls.MOH_BLOBS}{pool}/"

    @classmethod
    def moh_blob(cls, pool: str, sha256: str) -> str:
        """Prefix of the chunks of one music file (content-addressed)."""
        return f"{cls.moh_pool_blobs(pool)}{sha256}/"

    @classmethod
    def moh_chunk(cls, pool: str, sha256: str, index: int) -> str:
        """``blobs/moh/<pool>/<sha256>/<index>``: one chunk of a music file."""
        return f"{cls.moh_blob(pool, sha256)}{index:05d}"

    @classmethod
    def pool_prompts(cls, pool: str) -> str:
        """Prefix of the spoken prompts an admin set for one pool."""
        return f"{cls.PROMPTS}{pool}/"

    @classmethod
    def prompt(cls, pool: str, name: str) -> str:
        """``blobs/prompts/<pool>/<name>``: one spoken prompt (a whole 8 kHz WAV, one value)."""
        return f"{cls.pool_prompts(pool)}{name}"

    # -- disaster recovery ----------------------------------------------------------------------

    @classmethod
    def owner(cls, range_name: str) -> str:
        """``owners/<range>``: which pool serves a range (written by the controller leader)."""
        return cls.OWNERS + range_name

    @classmethod
    def member(cls, pool: str, node: str) -> str:
        """``members/<pool>/<node>``: a live node, bound to its lease."""
        return f"{cls.pool_members(pool)}{node}"

    @classmethod
    def pool_members(cls, pool: str) -> str:
        """Prefix of the member keys of one pool."""
        return f"{cls.MEMBERS}{pool}/"

    @classmethod
    def event(cls, time_ns: int, event_id: str) -> str:
        """``events/<time>-<id>``: one DR event; keys sort by time."""
        return f"{cls.EVENTS}{time_ns:020d}-{event_id}"

    @classmethod
    def request(cls, time_ns: int, action: str, pool: str) -> str:
        """``requests/<time>-<action>-<pool>``: an operator's failover or failback request."""
        return f"{cls.REQUESTS}{time_ns:020d}-{action}-{pool}"

    @classmethod
    def drain(cls, pool: str, node: str) -> str:
        """``drain/<pool>/<node>``: an operator asked the node to drain."""
        return f"{cls.DRAIN}{pool}/{node}"

    # -- parked calls ---------------------------------------------------------------------------

    @classmethod
    def parked(cls, orbit: str) -> str:
        """``parked/<orbit>``: the parked-call record."""
        return cls.PARKED + orbit

    @classmethod
    def lru(cls, orbit: str) -> str:
        """``lru/<orbit>``: when the orbit was last freed."""
        return cls.LRU + orbit

    @classmethod
    def history(cls, park_id: str) -> str:
        """``history/<park_id>``: how a parked call ended."""
        return cls.HISTORY + park_id

    @classmethod
    def chaos(cls, name: str) -> str:
        """``chaos/<name>``: scratch keys of the chaos tests."""
        return cls.CHAOS + name
