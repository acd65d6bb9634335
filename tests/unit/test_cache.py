from __future__ import annotations

import json

import pytest

from expect_ct.cache import BoundedMap
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


# --------------------------------------------------------------------------- BoundedMap


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bounded_map_evicts_the_least_recently_used() -> None:
    memory: BoundedMap[str, int] = BoundedMap(2)
    memory.put("a", 1)
    memory.put("b", 2)
    assert memory.get("a") == 1  # "a" is now the most recently used
    memory.put("c", 3)
    assert (memory.get("a"), memory.get("b"), memory.get("c")) == (1, None, 3)
    assert len(memory) == 2


def test_bounded_map_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    memory: BoundedMap[str, int] = BoundedMap(10, ttl=60.0, clock=clock)
    memory.put("a", 1)
    memory.put("short", 2, ttl=5.0)
    memory.put("longer", 3, ttl=600.0)  # never beyond the map's own ttl
    clock.now = 10.0
    assert (memory.get("a"), memory.get("short")) == (1, None)
    clock.now = 60.0
    assert (memory.get("a"), memory.get("longer")) == (None, None)
    assert len(memory) == 0


def test_bounded_map_without_ttl_keeps_entries_until_evicted() -> None:
    clock = FakeClock()
    memory: BoundedMap[str, int] = BoundedMap(1, clock=clock)
    memory.put("a", 1)
    clock.now = 1e9
    assert memory.get("a") == 1
    assert memory.entries() == [("a", float("inf"), 1)]


def test_bounded_map_discard_if_and_size_check() -> None:
    memory: BoundedMap[tuple[str, str], int] = BoundedMap(10)
    memory.put(("store", "write"), 1)
    memory.put(("store", "read"), 2)
    memory.discard_if(lambda key: key[1] == "write")
    assert memory.entries() == [(("store", "read"), float("inf"), 2)]
    with pytest.raises(ValueError, match="maxsize"):
        BoundedMap(0)
