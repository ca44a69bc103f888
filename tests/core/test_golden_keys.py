"""Golden keys and fingerprints: changing them breaks the resume of executions already in flight.

If this test fails, a change altered how calls are keyed or fingerprinted. Executions recorded
by an earlier version would then run their calls again (keys) or supersede them (fingerprints)
when resumed. Change the expected values only on purpose, and say so in the release notes.
"""

from __future__ import annotations

from kitaru_core import Client, _runtime, checkpoint, flow, scope


@checkpoint
def fetch(order_id: int, *, region: str = "eu") -> dict[str, int]:
    return {"order_id": order_id, "total": 10 * order_id}


@checkpoint(discriminator=lambda item: item)
def price(item: str) -> float:
    return 1.5


@checkpoint
def outer(n: int) -> int:
    return fetch(n)["total"] + 1


@flow(name="golden")
def golden(order_id: int) -> float:
    fetch(order_id)
    fetch(order_id, region="us")
    fetch(order_id=order_id, region="eu")
    with scope("agent:support"):
        price("apple")
        price("pear")
        price("apple")
    outer(order_id)
    return 0.0


FETCH_7_EU = "aba1876bcafd4ffde9bd3d4c6357136d35abc93cb0daf84a202169d414473813"
FETCH_7_US = "db550f65ffe8862c5c2a8a9ac0b3a23ab2b8b145bfd6bd1fbbc17f929cc68444"
PRICE_APPLE = "ce33907330f9de29b8a92840b2d1d3405cb50a12033832913add7db37e81e225"
PRICE_PEAR = "f76808b19e350468266abd05b9b354f50842fd8a2fc78c227464d657a2aecf71"
OUTER_7 = "1dd42de9287c1b6a96c617376c0df6b8304485783ed0b4803f1aac0f119471a5"


def test_keys_and_fingerprints_are_stable(sqlite_file_store: str) -> None:
    golden(7)
    [execution] = Client().list_executions()
    calls = _runtime.get_store().load_calls(execution.id)
    assert [(call.call_key, call.fingerprint) for call in calls] == [
        ("fetch:0", FETCH_7_EU),
        ("fetch:1", FETCH_7_US),
        ("fetch:2", FETCH_7_EU),  # keyword or positional, defaults applied: the same inputs
        ("agent:support:0/price:apple", PRICE_APPLE),
        ("agent:support:0/price:pear", PRICE_PEAR),
        ("agent:support:0/price:apple#2", PRICE_APPLE),
        ("outer:0/fetch:0", FETCH_7_EU),
        ("outer:0", OUTER_7),
    ]
