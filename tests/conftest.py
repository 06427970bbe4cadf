"""Fixtures shared by the test modules."""

import pytest

from learner.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> str:
    """The embedded tiny model, built once per session (~5 s a build); tests only read it."""
    return str(build_tiny_model(TinyModelSpec(), tmp_path_factory.mktemp("tiny-model")))
