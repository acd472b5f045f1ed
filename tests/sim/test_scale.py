"""Scale by simulation (``seda_dynamo.sim.scale``, issue 13) on small clusters: a join
through ``admin join`` reaches every node in a number of gossip rounds that grows with
log n, not n (Dynamo paper 4.8); the gossiped view grows linearly; partitions stay within
the checker's bound (6.2 strategy 3); a join on the full stage set finishes its
transfers (4.9); and the report keeps every section but its own.
"""

from __future__ import annotations

import math

from seda_dynamo.sim import scale, scalereport


def test_a_join_reaches_every_node_in_rounds_that_grow_with_log_n_not_n():
    small, large = scale.spread(8, 0), scale.spread(32, 0)
    for run in (small, large):
        assert run.learned == run.nodes, run  # every old member's view holds the new one
        assert 0 < run.rounds <= 2 * math.log2(run.nodes) + 3, run
        assert run.ring_rounds >= run.rounds - 1e-9  # the plan follows the member entry
        q, n = run.partitions, run.nodes
        assert run.before[0] <= -(-q // n) + 1 and run.after[0] <= -(-q // (n + 1)) + 1
        assert run.before[1] >= q // n - 1 and run.after[1] >= q // (n + 1) - 1
        assert run.moves > 0
        assert 0.95 <= run.interval <= 1.2  # due after 1 s, at the next 0.1 s tick
    assert large.rounds < 2 * small.rounds  # n grew 4 times
    # The view is members plus Q owners (Q grows with n): linear, not quadratic.
    assert large.view_bytes < 4 * 1.5 * small.view_bytes
    # Idle peer traffic per node: pings to every member, so linear in n too.
    assert large.messages_per_node_s < 4 * 1.5 * small.messages_per_node_s


def test_the_simulator_answering_pings_spreads_a_join_as_the_network_stages_do():
    for seed in (0, 1):
        real = scale.spread(12, seed, answer_pings=False)
        answered = scale.spread(12, seed)
        assert real.learned == answered.learned == 12
        assert abs(real.rounds - answered.rounds) <= 1.0, (real, answered)
        assert real.view_bytes == answered.view_bytes


def test_a_join_on_every_stage_finishes_its_transfers_and_holds_its_keys():
    run = scale.transfer(6, 0, keys=30)
    assert not run.problems, run.problems
    assert 0 < run.seconds < 60 and run.transfers > 0 and run.held > 0, run


def test_the_report_rewrites_its_own_section_and_keeps_the_others(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# Report\n\n## Re-injected bugs\n\nkept\n")
    runs = [scale.spread(5, 0), scale.spread(10, 0)]
    for _ in range(2):
        scalereport.write(report, runs, [])
    text = report.read_text()
    assert text.count("## Scale") == 1 and "## Re-injected bugs\n\nkept\n" in text
    assert "| 10 | 1 |" in text
    assert (tmp_path / scalereport.PLOT).read_text().lstrip().startswith(("<svg", "<?xml"))
