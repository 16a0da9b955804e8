"""`--speculative auto`'s rule (runtime/pays.py) on given step times: the first round is
not timed, PROBE timed rounds come before a decision, and speculation stops exactly when its
rate over the timed rounds falls below the plain step's."""

from __future__ import annotations

from v4c.runtime.pays import PROBE, Pays


def test_a_round_that_emits_one_token_slower_than_a_plain_step_stops():
    pays = Pays()
    pays.plain_step(0.1, rows=1)  # 10 tokens/s
    assert pays.round(5.0, 1) == ""  # the first round binds its steps: not timed
    verdicts = [pays.round(0.2, 1) for _ in range(PROBE)]  # 5 tokens/s
    assert verdicts[:-1] == [""] * (PROBE - 1)
    assert verdicts[-1] == f"off after {PROBE + 1} rounds: 5.0 tokens/s speculating, 10.0 plain"


def test_rounds_that_pay_go_on_and_the_rate_is_over_all_timed_rounds():
    pays = Pays()
    pays.plain_step(0.2, rows=2)  # two sequences: 10 tokens/s
    pays.round(9.0, 0)
    assert all(pays.round(0.2, 4) == "" for _ in range(5))  # 20 tokens/s
    assert pays.round(0.3, 2) == ""  # one slow round: 22 tokens in 1.3 s still pays
    assert pays.round(3.0, 0).startswith("off after 8 rounds: 5.1 tokens/s")
