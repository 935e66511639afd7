"""Reading Python-literal attribute text without `ast.literal_eval`: same values, linear cost."""

from __future__ import annotations

import ast
import random
import time

import pytest

from spanpipe.semconv.values import NotALiteral, int_list, loose, python_literal


def _as_lists(v):
    if isinstance(v, (list, tuple)):
        return [_as_lists(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_lists(x) for k, x in v.items()}
    return v


def _random_literal(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(9 if depth < 4 else 5)
    if pick == 0:
        return rng.randrange(-10**20, 10**20)
    if pick == 1:
        return rng.choice([0.5, -1e-7, 3.25e12, 2.0])
    if pick == 2:
        return "".join(rng.choice("ab'\"\\\n\té€ ,:[](){}") for _ in range(rng.randrange(8)))
    if pick == 3:
        return rng.choice([True, False, None])
    if pick == 4:
        return rng.randrange(50000)
    if pick in (5, 6):
        items = [_random_literal(rng, depth + 1) for _ in range(rng.randrange(4))]
        return items if pick == 5 else tuple(items)
    return {rng.choice(["k", "role", 1, "é"]) + ("" if rng.random() < .5 else "") if False else
            rng.choice(["k", "role", "content", "é"]): _random_literal(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_reads_what_repr_writes_as_literal_eval_does():
    rng = random.Random(7)
    for _ in range(3000):
        value = _random_literal(rng)
        text = repr(value)
        assert python_literal(text) == _as_lists(ast.literal_eval(text)), text


@pytest.mark.parametrize("text", ["(1 2)", "[1,,2]", "{'a' 1}", "(1", "1)", "[1] [2]", "{[1]: 2}", "x", "(1:2)",
                                  "{'a': }", "[,]", "__import__('os')", "[1, 2] + [3]", "'unterminated",
                                  "[" + "9" * 5000 + ", 'x']"])
def test_refuses_what_is_not_a_literal(text):
    with pytest.raises(NotALiteral):
        python_literal(text)
    assert loose(text) == text


def test_token_ids_of_megabytes_cost_linear_time_and_little_memory():
    import tracemalloc
    ids = "(" + ", ".join(["1"] * 1_200_000) + ")"  # ~3.6 MB, as in the report
    tracemalloc.start()
    t0 = time.process_time()
    assert int_list(ids) == [1] * 1_200_000
    elapsed = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024 * 1024  # literal_eval peaked near 1.8 GB
    assert elapsed < 5
    assert loose("[" * 100_000 + "]" * 100_000).startswith("[[[")  # too deep: left as text
