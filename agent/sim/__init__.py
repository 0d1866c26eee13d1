"""A simulated fleet: real agent code (provider, link, engine core, gate, admission) on the fake backend.

    profiles.py   Mac memory mix, per-model timing (decode, batch slowdown, prefill, load), output lengths
    engine.py     SimEngine: the FakeEngine with one timing per model (gpt-oss and gemma differ)
    agent.py      SimAgent: engine + Provider + Link + a state watcher, startable and killable in one loop

Pure asyncio; imports agent.engine's fake backend, never mlx.
"""
