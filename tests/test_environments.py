"""Environments: CRUD, unique names, write-only secrets, delete guarded by tasks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import assert_problem

SECRET = "s3cr3t-value-never-shown"


async def test_crud_and_secrets_stay_hidden(
    client: Any, tenant: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h = tenant["headers"]
    created = await client.post(
        "/v1/environments",
        json={
            "name": "prod",
            "description": "d",
            "config": {"region": "eu"},
            "secrets": {"API_TOKEN": SECRET, "DB_PASS": SECRET + "2"},
        },
        headers=h,
    )
    assert created.status_code == 201, created.text
    env = created.json()
    assert env["secrets"] == ["API_TOKEN", "DB_PASS"] and env["is_active"] is True
    assert env["config"] == {"region": "eu"} and env["version"] == 1
    responses = [created]
    responses.append(await client.get(f"/v1/environments/{env['id']}", headers=h))
    responses.append(await client.get("/v1/environments", headers=h))
    patched = await client.patch(
        f"/v1/environments/{env['id']}",
        json={"secrets": {"DB_PASS": None, "NEW": SECRET}, "is_active": False},
        headers={**h, "If-Match": "1"},
    )
    responses.append(patched)
    assert patched.status_code == 200, patched.text
    assert patched.json()["secrets"] == ["API_TOKEN", "NEW"]
    assert patched.json()["is_active"] is False and patched.json()["version"] == 2
    responses.append(await client.get("/v1/events", headers=h))
    responses.append(await client.get("/schema/openapi.json"))
    bad = await client.post("/v1/environments", json={"name": "x", "secrets": {"A": 5}}, headers=h)
    responses.append(bad)
    assert_problem(bad, 400)
    for response in responses:
        assert SECRET not in response.text
    assert SECRET not in caplog.text
    stale = await client.patch(
        f"/v1/environments/{env['id']}", json={"name": "p2"}, headers={**h, "If-Match": "1"}
    )
    assert_problem(stale, 412)
    active = await client.get("/v1/environments", params={"is_active": "true"}, headers=h)
    assert env["id"] not in {e["id"] for e in active.json()["items"]}


async def test_unique_names(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    first = await client.post("/v1/environments", json={"name": "dup"}, headers=h)
    assert first.status_code == 201
    assert_problem(await client.post("/v1/environments", json={"name": "dup"}, headers=h), 409)
    # names are unique per tenant only
    other = await client.post(
        "/v1/environments", json={"name": "dup"}, headers=other_tenant["headers"]
    )
    assert other.status_code == 201
    second = await client.post("/v1/environments", json={"name": "dup2"}, headers=h)
    renamed = await client.patch(
        f"/v1/environments/{second.json()['id']}", json={"name": "dup"}, headers=h
    )
    assert_problem(renamed, 409)


async def test_delete_in_use_needs_force(client: Any, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    env = (await client.post("/v1/environments", json={"name": "used"}, headers=h)).json()
    task = (
        await client.post("/v1/tasks", json={"title": "t", "environment_id": env["id"]}, headers=h)
    ).json()
    assert_problem(
        await client.delete(f"/v1/environments/{env['id']}", headers=h), 409, mentions="force"
    )
    still = await client.get(f"/v1/environments/{env['id']}", headers=h)
    assert still.status_code == 200
    forced = await client.delete(
        f"/v1/environments/{env['id']}", params={"force": "true"}, headers=h
    )
    assert forced.status_code == 204
    detached = await client.get(f"/v1/tasks/{task['id']}", headers=h)
    assert detached.json()["environment_id"] is None
    assert_problem(await client.get(f"/v1/environments/{env['id']}", headers=h), 404)


async def test_bad_input_and_isolation(
    client: Any, tenant: dict[str, Any], other_tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    assert_problem(await client.post("/v1/environments", json={"name": ""}, headers=h), 422)
    assert_problem(
        await client.post("/v1/environments", json={"name": "a", "config": [1]}, headers=h), 400
    )
    assert_problem(
        await client.post(
            "/v1/environments", json={"name": "a", "secrets": {"bad name!": "x"}}, headers=h
        ),
        422,
    )
    assert_problem(
        await client.post(
            "/v1/environments", json={"name": "a", "config": {"x": "y" * 70000}}, headers=h
        ),
        413,
    )
    assert_problem(await client.get("/v1/environments", params={"cursor": "zz"}, headers=h), 422)
    env = (await client.post("/v1/environments", json={"name": "iso"}, headers=h)).json()
    other = other_tenant["headers"]
    url = f"/v1/environments/{env['id']}"
    assert_problem(await client.get(url, headers=other), 404)
    assert_problem(await client.patch(url, json={"name": "z"}, headers=other), 404)
    assert_problem(await client.delete(url, headers=other), 404)
    listed = await client.get("/v1/environments", headers=other)
    assert env["id"] not in {e["id"] for e in listed.json()["items"]}
    assert (await client.get(url, headers=h)).json() == env
