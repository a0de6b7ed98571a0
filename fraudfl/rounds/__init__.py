"""Round orchestration of the federation, sans-IO: control messages and the aggregator's rounds.

``messages`` holds the control-plane payloads (announcements, declines, published models) that
travel inside transport envelopes next to the secure-aggregation messages; ``orchestrator`` is
the aggregator's round state machine; ``exact_sum`` encodes integer-valued statistics so that
secure aggregation sums them exactly.
"""
