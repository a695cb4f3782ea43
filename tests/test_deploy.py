"""The production deployment in ``deploy/`` is well-formed and matches the service.

``docker compose config`` (or the standalone ``docker-compose``) validates the
compose file without a daemon; where neither is installed that one check is
skipped with a loud reason, and the structure is still checked here with PyYAML.
The Grafana dashboard may only chart metrics that the service really exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ENV = {"POSTGRES_PASSWORD": "x", "POSTGRES_REPLICATION_PASSWORD": "v", "MEMORY_ADMIN_TOKEN": "y",
       "MEMORY_SECRETS_KEY": "z", "GRAFANA_ADMIN_PASSWORD": "w"}


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_config_validates() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("NO COMPOSE CLI: neither `docker compose` nor `docker-compose` is installed; "
                    "only the YAML structure was checked (apt-get install docker-compose)")
    ok = subprocess.run([*cli, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], env={**ENV, "PATH": "/usr/bin:/bin"},
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([*cli, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], env={"PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr, "secrets must be required"
    # the example file names every variable; only the secrets key is left to generate
    example = [*cli, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / ".env.example"), "config", "-q"]
    filled = subprocess.run(example, env={"PATH": "/usr/bin:/bin", "MEMORY_SECRETS_KEY": "z"},
                            capture_output=True, text=True, timeout=60)
    assert filled.returncode == 0, filled.stderr
    unfilled = subprocess.run(example, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert unfilled.returncode != 0 and "MEMORY_SECRETS_KEY" in unfilled.stderr


def test_compose_structure() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    replicas = [name for name, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"]
    assert len(replicas) == 2, replicas
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert all(f"server {r}:8080" in nginx for r in replicas)
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{r}:8080" for r in replicas)
    assert {"otel-collector", "prometheus", "grafana", "proxy"} <= set(services)
    for volume in services["grafana"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists(), volume


def test_dockerfile_is_multi_stage_non_root_with_a_ready_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "torch==2.13.0" in text and "whl/cpu" in text
    assert re.search(r"^USER memory$", text, re.M)
    assert "HEALTHCHECK" in text and "/ready" in text


async def test_dashboard_charts_only_exported_metrics(client: Any) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "memory-service.json").read_text())
    exposition = (await client.get("/metrics")).text
    exported = set(re.findall(r"^# TYPE (\w+)", exposition, re.M))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(memory_\w+)", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in exported or name in exported, (panel["title"], name)


def test_traces_reach_jaeger_and_grafana_links_to_them() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    exporters = collector["service"]["pipelines"]["traces"]["exporters"]
    assert [collector["exporters"][e]["endpoint"] for e in exporters] == ["jaeger:4317"]
    sources = [
        source
        for path in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    jaeger = next(s for s in sources if s["type"] == "jaeger")
    assert jaeger["url"] == "http://jaeger:16686"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "memory-service.json").read_text())
    assert any(v["name"] == "trace_id" for v in dashboard["templating"]["list"])
    link = next(link for link in dashboard["links"] if "${trace_id}" in link["url"])
    assert jaeger["uid"] in link["url"] and link["url"].startswith("/explore?")


def test_the_standby_streams_from_the_primary_with_the_same_image() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    standby, primary = services["db-standby"], services["db"]
    assert standby["image"] == primary["image"]
    assert "wal_level=replica" in primary["command"]
    script = (DEPLOY / "postgres" / "standby.sh").read_text()
    assert "pg_basebackup" in script and " -R " in script
    for volume in [*standby["volumes"], *primary["volumes"]]:
        source = volume.split(":")[0]
        assert not source.startswith("./") or (DEPLOY / source).exists(), volume
    replicas = [s for s in services.values() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"]
    assert all("db-standby" in s["environment"]["MEMORY_DATABASE_REPLICA_URLS"] for s in replicas)
    assert sorted(s["environment"]["MEMORY_REPLICA_ID"] for s in replicas) == ["api-1", "api-2"]


def test_the_proxy_routes_by_tenant_and_keeps_the_host_port() -> None:
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "hash $tenant_key consistent;" in nginx
    assert "proxy_set_header Host $http_host;" in nginx and "X-Forwarded-Proto" in nginx
    assert "proxy_next_upstream error" in nginx


def test_the_image_holds_the_client_for_the_mcp_server() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY client ./client" in text and "./client[mcp]" in text
