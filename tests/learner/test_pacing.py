"""The learner's pacing: it waits for min_replay_steps, keeps its draws within samples_per_insert
× the stored steps, and after a resume onto a replay that no longer backs its old draws it starts
the ratio afresh instead of waiting for the old run's data to be inserted again."""

from learner.pacing import Pacing


def stats(size: int, stored: int) -> list[dict]:
    return [{"size_steps": size, "stored_steps": stored}]


def test_fill_then_rate_then_go():
    p = Pacing(batch_size=8, min_replay_steps=16, samples_per_insert=2.0, groups=False)
    assert p.ready(stats(10, 10), 0) == "fill"
    assert p.ready(stats(16, 16), 24) == "go"  # 24 + 8 <= 2 × 16
    assert p.ready(stats(16, 16), 25) == "rate"


def test_a_resume_onto_a_smaller_replay_forgives_only_what_it_no_longer_backs():
    p = Pacing(batch_size=8, min_replay_steps=16, samples_per_insert=2.0, groups=False)
    sampled = 2000  # the old run drew 2000 steps against its 1000 stored
    assert p.ready(stats(40, 40), sampled) == "rate"  # without rebase: wait for ~1000 new inserts
    p.rebase(stats(40, 40), sampled)
    assert p.forgiven == 2000 - 80
    # At the ratio, as a resume onto the whole replay is: the next batch waits for 4 new steps.
    assert p.ready(stats(40, 40), sampled) == "rate" and p.ready(stats(44, 44), sampled) == "go"
    p.rebase(stats(1000, 1000), sampled)  # the whole replay came back: nothing to forgive
    assert p.forgiven == 0 and p.ready(stats(1000, 1000), sampled) == "rate"
