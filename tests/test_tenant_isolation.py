"""Tenant isolation on every memory endpoint: another tenant's row is a 404, never data."""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import pytest
from live_http import in_app_loop

from memory_service.errors import Unauthenticated
from tests.conftest import ADMIN, assert_problem, new_tenant
from tests.helpers import page_all, unit_vectors


async def test_other_tenants_rows_behave_as_missing(client: Any, tenant: dict, other_tenant: dict) -> None:
    mine, theirs = tenant["headers"], other_tenant["headers"]
    vec = unit_vectors(1, seed=42)[0].tolist()
    r = await client.post(
        "/v1/memories", json={"content": "secret plan", "user_id": "u", "embedding": vec}, headers=mine
    )
    mid = r.json()["id"]
    assert_problem(await client.get(f"/v1/memories/{mid}", headers=theirs), 404)
    assert_problem(await client.get(f"/v1/memories/{mid}/history", headers=theirs), 404)
    assert_problem(
        await client.patch(f"/v1/memories/{mid}", json={"content": "hijack"}, headers=theirs), 404
    )
    assert_problem(await client.delete(f"/v1/memories/{mid}", headers=theirs), 404)
    r = await client.delete("/v1/memories", params={"user_id": "u"}, headers=theirs)
    assert r.json() == {"deleted": 0}
    assert await page_all(client, theirs, {"user_id": "u"}) == []
    for mode_body in ({"embedding": vec}, {"query": "secret plan"}):
        r = await client.post("/v1/memories/search", json={**mode_body, "k": 10}, headers=theirs)
        assert r.status_code == 200 and r.json()["results"] == []
    # the same content in the other tenant is its own memory, not a duplicate of ours
    r = await client.post(
        "/v1/memories", json={"content": "secret plan", "user_id": "u", "embedding": vec}, headers=theirs
    )
    assert r.status_code == 201 and r.json()["id"] != mid
    # and ours is untouched
    got = await client.get(f"/v1/memories/{mid}", headers=mine)
    assert got.status_code == 200 and got.json()["content"] == "secret plan"


async def test_cursor_of_one_tenant_is_refused_by_another(client: Any, tenant: dict, other_tenant: dict) -> None:
    vecs = unit_vectors(3, seed=1)
    for i in range(3):
        await client.post(
            "/v1/memories", json={"content": f"m{i}", "embedding": vecs[i].tolist()}, headers=tenant["headers"]
        )
    r = await client.get("/v1/memories", params={"limit": 1}, headers=tenant["headers"])
    cursor = r.json()["next_cursor"]
    assert cursor
    assert_problem(
        await client.get("/v1/memories", params={"cursor": cursor}, headers=other_tenant["headers"]),
        422,
        mentions="cursor",
    )


# the operations anyone may call: liveness, readiness and the Prometheus scrape
PUBLIC_OPERATIONS = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
HTTP_METHODS = ("get", "put", "post", "patch", "delete")


def example_path(path: str, operation: dict[str, Any]) -> str:
    """The path with each parameter filled in with a value of its type."""
    types = {
        p["name"]: p.get("schema", {}).get("type")
        for p in operation.get("parameters", [])
        if p.get("in") == "path"
    }
    return re.sub(
        r"\{([^}]+)\}",
        lambda m: "1" if types.get(m[1]) == "integer" else "00000000-0000-0000-0000-000000000000",
        path,
    )


async def test_authentication_is_required_everywhere(client: Any) -> None:
    """Every operation of the live OpenAPI document, except the public ones, answers
    401 without a key, with an unknown key and with another scheme."""
    document = (await client.get("/schema/openapi.json")).json()
    operations = [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    public = {(m, p) for m, p, op in operations if not op.get("security")}
    assert public == PUBLIC_OPERATIONS, "an operation without security that is not meant public"
    guarded = [(m, p, op) for m, p, op in operations if (m, p) not in PUBLIC_OPERATIONS]
    assert len(guarded) > 60, len(guarded)  # the walk found the API, not a stub
    for method, path, operation in guarded:
        url = example_path(path, operation)
        for headers in ({}, {"Authorization": "Bearer mk_000000000000_" + "x" * 43},
                        {"Authorization": "Basic abc"}):
            r = await client.request(method, url, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert_problem(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"


async def test_admin_endpoints_need_the_admin_token(client: Any, tenant: dict) -> None:
    assert_problem(await client.post("/v1/admin/tenants", json={"name": "x"}), 401)
    assert_problem(
        await client.post("/v1/admin/tenants", json={"name": "x"}, headers=tenant["headers"]), 401
    )
    assert_problem(await client.post("/v1/admin/tenants", json={"name": ""}, headers=ADMIN), 400)


async def test_keys_can_be_added_and_revoked(client: Any) -> None:
    t = await new_tenant(client)
    r = await client.post(f"/v1/admin/tenants/{t['id']}/keys", headers=ADMIN)
    assert r.status_code == 201
    second = r.json()["api_key"]
    h2 = {"Authorization": f"Bearer {second}"}
    assert (await client.get("/v1/memories", headers=h2)).status_code == 200
    prefix = second.split("_")[1]
    assert (await client.delete(f"/v1/admin/tenants/{t['id']}/keys/{prefix}", headers=ADMIN)).status_code == 204
    assert_problem(await client.get("/v1/memories", headers=h2), 401)
    assert (await client.get("/v1/memories", headers=t["headers"])).status_code == 200
    assert_problem(await client.delete(f"/v1/admin/tenants/{t['id']}/keys/{prefix}", headers=ADMIN), 404)
    assert_problem(
        await client.post("/v1/admin/tenants/00000000-0000-0000-0000-000000000000/keys", headers=ADMIN),
        404,
    )
    assert_problem(await client.post("/v1/admin/tenants/not-a-uuid/keys", headers=ADMIN), 422)


async def test_admin_endpoints_refuse_everything_without_an_admin_token(
    settings: Any, database_url: str, hash_embedder: Any
) -> None:
    from litestar.testing import AsyncTestClient

    from api.app import create_app

    app = create_app(settings.with_(admin_token=None, database_url=database_url), embedder=hash_embedder)
    async with AsyncTestClient(app=app) as other:
        for headers in ({}, ADMIN, {"Authorization": "Bearer "}):
            r = await other.post("/v1/admin/tenants", json={"name": "x"}, headers=headers)
            assert_problem(r, 403, mentions="MEMORY_ADMIN_TOKEN")


async def time_key_checks(tenants: Any, key: str) -> tuple[float, float]:
    """Median seconds to refuse an unknown prefix and a known prefix with a wrong
    secret, sampled alternately so that load on the machine falls on both alike."""
    unknown = "mk_" + "0" * 12 + "_" + "A" * 43
    wrong_secret = f"mk_{key.split('_')[1]}_" + "A" * 43
    samples: dict[str, list[float]] = {unknown: [], wrong_secret: []}
    for _ in range(300):
        for attempt, times in samples.items():
            started = time.perf_counter()
            with pytest.raises(Unauthenticated):
                await tenants.authenticate(attempt)
            times.append(time.perf_counter() - started)
    return statistics.median(samples[unknown]), statistics.median(samples[wrong_secret])


async def test_a_key_check_takes_as_long_whether_its_prefix_exists_or_not(
    app: Any, client: Any, tenant: dict
) -> None:
    key = tenant["headers"]["Authorization"].split()[1]
    unknown, known = await in_app_loop(client, time_key_checks, app.state.tenants, key)
    # both look the prefix up, hash the key and compare in constant time; the bound
    # leaves room for noise and catches work done for one kind only (a hash, a KDF)
    assert 0.6 < unknown / known < 1.6, f"unknown prefix {unknown * 1e3:.3f} ms, known {known * 1e3:.3f} ms"
