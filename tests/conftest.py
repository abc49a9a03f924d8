import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never use the Hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUESTION = ("Lily has 5 red balloons and 7 blue balloons. She gives 3 balloons to her friend. "
            "How many balloons does she have left?")


@pytest.fixture(scope="session")
def smol():
    from reasoning.backends import load_backend

    return load_backend("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    from reasoning.backends import load_backend

    return load_backend("gemma3-270m")
