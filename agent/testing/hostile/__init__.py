"""Hostile providers: scripted websocket peers that speak the wire protocol to attack the coordinator.

    peer.py       HostilePeer: connects with a given credential, registers, heartbeats a huge free KV
    sinkhole.py   Sinkhole: accepts and never answers (silent, one empty chunk, or empty chunks forever)
    inflater.py   UsageInflater: serves text but claims more tokens per chunk and huge usage at the end
    flooder.py    Flooder: many links, the largest register, bad and oversized frames as fast as allowed

No runtime module imports these; the soak (agent/testing/soak) and the tests do.
"""
