"""The chunked-prefill time share: chunks run only once decode steps have earned their cost, so the streams
keep about 1 - SHARE of their pace, and no credit banks up while nothing is being read."""

from __future__ import annotations

from ollama_torch.engine.chunked import CHUNK, SHARE, ChunkPlanner


def test_chunks_take_their_share_of_the_time() -> None:
    planner = ChunkPlanner()
    assert planner.tokens == CHUNK and planner.may_run()  # the first chunk runs at once and is measured
    planner.record_chunk(CHUNK, 0.4)
    decode, chunk_time, decode_time = 0.05, 0.0, 0.0
    for _ in range(1000):
        planner.record_decode(decode)
        decode_time += decode
        if planner.may_run():
            planner.record_chunk(CHUNK, 0.4)
            chunk_time += 0.4
    assert abs(chunk_time / (chunk_time + decode_time) - SHARE) < 0.02


def test_no_burst_after_a_quiet_spell_and_a_fixed_size() -> None:
    planner = ChunkPlanner(32)
    assert planner.tokens == 32
    planner.record_chunk(32, 0.2)
    for _ in range(1000):  # streams decode with nothing to read: at most one chunk's worth is banked
        planner.record_decode(0.05)
    planner.record_chunk(32, 0.2)
    assert not planner.may_run()
    planner.idle()
    assert planner.credit == 0.0
