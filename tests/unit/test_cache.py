from __future__ import annotations

import json

import pytest

from expect_ct.cache import VerdictCache
from expect_ct.loglist import LogList
from support import pki
from support.world import World


@pytest.fixture(scope="module")
def log_list(world: World) -> LogList:
    return LogList.load(world.log_list)


def evaluate(cache: VerdictCache, world: World, log_list: LogList, **overrides: object):
    leaf = overrides.pop("leaf", world.compliant.cert)
    args: dict[str, object] = dict(
        tls_scts=None,
        ocsp_response=None,
        log_list=log_list,
        policy="chrome",
        issuers=[world.public_inter.cert],
    )
    args.update(overrides)
    return cache.get_or_evaluate([leaf, world.public_inter.cert], **args)  # type: ignore[arg-type,list-item]


def test_second_evaluation_of_the_same_inputs_is_a_hit(world: World, log_list: LogList) -> None:
    cache = VerdictCache()
    first = evaluate(cache, world, log_list)
    second = evaluate(cache, world, log_list)
    assert first is second and first.compliant
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"policy": "apple"},
        {"tls_scts": b"\x00\x00"},
        {"ocsp_response": b"\x30\x00"},
        {"issuers": []},
    ],
)
def test_anything_the_verdict_depends_on_is_part_of_the_key(
    world: World, log_list: LogList, change: dict[str, object]
) -> None:
    cache = VerdictCache()
    evaluate(cache, world, log_list)
    evaluate(cache, world, log_list, **change)
    assert cache.misses == 2


def test_another_log_list_is_another_key(world: World, log_list: LogList) -> None:
    cache = VerdictCache()
    evaluate(cache, world, log_list)
    other = LogList.from_json(json.dumps(json.loads(world.log_list.read_text())), source="copy")
    evaluate(cache, world, other)
    assert cache.misses == 2


def test_size_is_bounded_and_least_recently_used_goes_first(
    world: World, log_list: LogList
) -> None:
    cache = VerdictCache(maxsize=2)
    leaves = [pki.make_leaf(world.public_inter)[0] for _ in range(3)]
    evaluate(cache, world, log_list, leaf=leaves[0])
    evaluate(cache, world, log_list, leaf=leaves[1])
    evaluate(cache, world, log_list, leaf=leaves[0])  # refresh 0
    evaluate(cache, world, log_list, leaf=leaves[2])  # evicts 1
    assert len(cache) == 2
    evaluate(cache, world, log_list, leaf=leaves[0])
    assert cache.hits == 2
    evaluate(cache, world, log_list, leaf=leaves[1])
    assert cache.misses == 4


def test_entries_expire(world: World, log_list: LogList) -> None:
    cache = VerdictCache(ttl=0.0)
    evaluate(cache, world, log_list)
    evaluate(cache, world, log_list)
    assert cache.misses == 2


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        VerdictCache(maxsize=0)
