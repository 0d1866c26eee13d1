"""The garbage collector tuned for a relay: `serve`'s process, once the app is built.

Every relayed token allocates a few container objects (the validated frame's models, a Token, tuples) that
die young, by reference counting. With Python's defaults (a young collection every 700 allocations, an older
one every 10 of those) the collector ran every few tokens and, now and then, walked the whole heap: ~8 % of the
coordinator's CPU in the relay benchmark (py-spy), ~3 µs of each relayed token (scripts/bench_relay.py).

    gc.freeze()                 what exists once the app is built (modules, the catalog, pydantic's schemas,
                                the settings) moves to the permanent generation: no collection walks it again
    gc.set_threshold(young, 50, 100)   `gc_young_threshold` allocations between young collections, and the
                                older ones rarer: cyclic garbage waits a little longer, nothing else changes

Process-wide, so only the coordinator's own process calls it (`serve`, and the relay benchmark's coordinator,
which runs as `serve` would); an app embedded in a host's process (a test run) leaves the host's collector alone.

Public names: tune_gc.
"""

from __future__ import annotations

import gc

from agent.coordinator.settings import CoordinatorSettings

OLDER_THRESHOLDS = (50, 100)  # young collections per middle one, middle ones per full one


def tune_gc(settings: CoordinatorSettings) -> None:
    if settings.gc_young_threshold <= 0:
        return
    gc.collect()  # what startup left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(settings.gc_young_threshold, *OLDER_THRESHOLDS)
