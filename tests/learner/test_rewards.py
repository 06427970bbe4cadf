import pytest

from rewards import make_reward


def test_success_reward():
    r = make_reward("success")
    assert r(success=True, outcome="correct", env_reward=0.7) == 1.0
    assert r(success=False, outcome="incorrect", env_reward=-1.0) == 0.0


def test_outcome_reward_defaults_and_params():
    r = make_reward("outcome")
    assert [r(success=s, outcome=o, env_reward=0.0) for s, o in
            [(True, "correct"), (False, "incorrect"), (False, "unknown")]] == [1.0, -0.5, 0.0]
    assert make_reward("outcome", incorrect=-1.0)(success=False, outcome="incorrect", env_reward=0) == -1.0


def test_env_reward_passes_the_page_reward():
    assert make_reward("env")(success=True, outcome="correct", env_reward=0.25) == 0.25


def test_unknown_reward_is_named():
    with pytest.raises(ValueError, match="reward.name must be one of"):
        make_reward("nope")
