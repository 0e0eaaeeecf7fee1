import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def benchmark_cache(tmp_path_factory):
    """One benchmark cache for the whole session (subprocesses inherit it through the env)."""
    path = tmp_path_factory.mktemp("ascood-cache")
    old = os.environ.get("ASCOOD_CACHE")
    os.environ["ASCOOD_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ASCOOD_CACHE", None)
    else:
        os.environ["ASCOOD_CACHE"] = old
