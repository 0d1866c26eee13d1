"""How long /metrics and /v1/models/capacity take beside a provider that registers a huge context.

A scripted provider (tests/provider_support.py, the real websocket) registers two models the catalog does
not know, cold, with max_context = --context (default: the wire's MAX_CONTEXT_TOKENS), so every scrape runs
the load gate's full-context KV replay. Prints each request's time.

    PYTHONPATH=. python scripts/bench_metrics_scrape.py [--context N] [--scrapes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.wire.frames import MAX_CONTEXT_TOKENS, ModelEntry, SlotState  # noqa: E402
from tests.provider_support import GEMMA, GPT, coordinator, entry_for, provider  # noqa: E402


async def main(context: int, scrapes: int) -> None:
    async with coordinator() as server:
        specs = [replace(spec, id=f"hostile-{spec.id}") for spec in (GPT, GEMMA)]
        # model_construct: past the wire's bound too, to see what the coordinator would do with it
        entries = [ModelEntry.model_construct(**{**dict(entry_for(spec)), "max_context": context}) for spec in specs]
        started = time.perf_counter()
        try:
            await provider(server, *specs, models=entries, state=SlotState.COLD)
            print(f"register: {1000 * (time.perf_counter() - started):.1f} ms")
        except AssertionError as refused:
            print(f"register refused: {refused}")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600) as http:
            for i in range(scrapes):
                for path in ("/metrics", "/v1/models/capacity"):
                    started = time.perf_counter()
                    status = (await http.get(path)).status_code
                    print(f"{path} #{i + 1}: {status} in {1000 * (time.perf_counter() - started):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=MAX_CONTEXT_TOKENS)
    parser.add_argument("--scrapes", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.context, args.scrapes))
