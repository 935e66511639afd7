import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

UNGROUPED = pytest.StashKey[set[str]]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` a test marked `xdist_group` must carry its group in its node id, or
    the group's tests are spread over workers: each starts its own Ray cluster and its own copy of
    fixtures meant to be shared. pytest-xdist tags the id on the worker; where a pytest release
    stops that from taking effect, those tests fail saying so instead of running slow and racy."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
        return
    grouped = [item for item in items if any(item.iter_markers("xdist_group"))]
    config.stash[UNGROUPED] = {item.nodeid for item in grouped if "@" not in item.nodeid.rsplit("]", 1)[-1]}
    # A group runs on one worker from start to end: handed out first, it overlaps the rest of the
    # suite on the other workers instead of running alone at the end. Every worker sorts the same way.
    first = set(map(id, grouped))
    items[:] = grouped + [item for item in items if id(item) not in first]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in item.config.stash.get(UNGROUPED, set()):
        pytest.fail("pytest-xdist did not tag this test with its xdist_group, so its group is spread over "
                    "workers: this pytest and pytest-xdist do not work together (see pyproject.toml)", pytrace=False)
