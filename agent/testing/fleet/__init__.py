"""A simulated fleet: real agent code (provider, link, engine core, gate, admission) on the fake backend.

    profiles.py   Mac memory mix, per-model timing (decode, batch slowdown, prefill, load), output lengths
    agent.py      SimAgent: FakeEngine (one timing per model) + LinkHandler + Link, startable and
                  killable in one loop

Pure asyncio; imports agent.engine's fake backend, never mlx.
"""
