"""Event sequence numbers are per tenant: no tenant can read another's activity from them."""

from __future__ import annotations

from typing import Any


async def test_each_tenant_numbers_its_events_from_one(client: Any, tenant: dict, other_tenant: dict) -> None:
    for round_ in range(3):
        for who in (tenant, other_tenant, other_tenant):
            r = await client.post("/v1/events", json={"items": [{"type": f"step.r{round_}"}] * 2}, headers=who["headers"])
            assert r.status_code == 201, r.text
    mine = (await client.get("/v1/events", params={"type": "step"}, headers=tenant["headers"])).json()["items"]
    theirs = (await client.get("/v1/events", params={"type": "step"}, headers=other_tenant["headers"])).json()["items"]
    mine_numbers = [e["sequence"] for e in mine]
    theirs_numbers = [e["sequence"] for e in theirs]
    # service events (memory.added, ...) may be numbered in between, but never another tenant's
    assert mine_numbers == sorted(mine_numbers) and len(set(mine_numbers)) == 6
    assert theirs_numbers == sorted(theirs_numbers) and len(set(theirs_numbers)) == 12
    assert max(mine_numbers) < 6 + 10 and max(theirs_numbers) < 12 + 10, (mine_numbers, theirs_numbers)
