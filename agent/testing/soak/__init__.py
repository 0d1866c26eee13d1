"""The soak of issue 11: honest and hostile providers under concurrent consumers, and what the books say.

    config.py      SoakConfig (what the run is made of) and soak_settings (deadlines on the soak's clock)
    identities.py  each provider's credential: its own identity, or the shared token
    cast.py        Cast: the honest SimAgents and the hostile peers (agent/testing/hostile)
    consumers.py   ConsumerPool: M streaming clients, each request's Outcome
    books.py       the consumer accounts, and the ledger matched to what each client was shown
    probe.py       /health and /metrics timed during the run, and memory
    run.py         run_soak: all of it, once
    report.py      the summary, a terminal table and a markdown block

scripts/soak.py runs it at full size; tests/test_soak.py runs it bounded and short.
"""
