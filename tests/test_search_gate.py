"""The per-tenant search gate: fair while tenants compete, no idle cores while one is alone."""

from __future__ import annotations

import asyncio

from memory_service.infra.search_gate import TenantGate


class Probe:
    """Counts how many searches of each tenant are inside the gate at once."""

    def __init__(self, gate: TenantGate) -> None:
        self.gate = gate
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.release = asyncio.Event()

    async def search(self, tenant: str, release: asyncio.Event | None = None) -> None:
        async with self.gate.turn(tenant):
            self.now[tenant] = self.now.get(tenant, 0) + 1
            self.most[tenant] = max(self.most.get(tenant, 0), self.now[tenant])
            await (release or self.release).wait()
            self.now[tenant] -= 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_tenant_alone_runs_its_burst() -> None:
    probe = Probe(TenantGate(2, burst=8))
    tasks = [asyncio.create_task(probe.search("a")) for _ in range(12)]
    await settle()
    assert probe.now["a"] == 8
    probe.release.set()
    await asyncio.gather(*tasks)
    assert probe.most["a"] == 8
    assert not probe.gate._lanes  # idle tenants keep nothing


async def test_a_second_tenant_holds_both_to_the_width() -> None:
    probe = Probe(TenantGate(2, burst=8))
    done = [asyncio.Event() for _ in range(12)]
    flood = [asyncio.create_task(probe.search("a", done[i])) for i in range(12)]
    await settle()
    assert probe.now["a"] == 8
    b_done = asyncio.Event()
    victim = asyncio.create_task(probe.search("b", b_done))
    await settle()
    assert probe.now["b"] == 1  # the newcomer is never held behind the flood's burst
    for event in done[:8]:  # the flood's running searches finish ...
        event.set()
    await settle()
    assert probe.now["a"] == 2  # ... and while b is here, a runs at most 2 at once
    b_done.set()
    for event in done:
        event.set()
    await asyncio.gather(*flood, victim)


async def test_when_the_other_tenant_leaves_the_burst_comes_back() -> None:
    gate = TenantGate(2, burst=6)
    probe = Probe(gate)
    other = asyncio.Event()

    async def b_search() -> None:
        async with gate.turn("b"):
            await other.wait()

    b = asyncio.create_task(b_search())
    await settle()
    tasks = [asyncio.create_task(probe.search("a")) for _ in range(10)]
    await settle()
    assert probe.now["a"] == 2
    other.set()
    await b
    await settle()
    assert probe.now["a"] == 6
    probe.release.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_does_not_keep_a_turn() -> None:
    probe = Probe(TenantGate(1, burst=1))
    first = asyncio.create_task(probe.search("a"))
    waiting = [asyncio.create_task(probe.search("a")) for _ in range(3)]
    await settle()
    waiting[0].cancel()
    probe.release.set()
    await asyncio.gather(first, *waiting[1:])
    assert probe.most["a"] == 1
    assert not probe.gate._lanes


async def test_width_zero_switches_the_gate_off() -> None:
    probe = Probe(TenantGate(0, burst=0))
    tasks = [asyncio.create_task(probe.search("a")) for _ in range(20)]
    await settle()
    assert probe.now["a"] == 20
    probe.release.set()
    await asyncio.gather(*tasks)
