"""The HTTP workers of ``workflow_bench``: they claim, compute and complete the steps.

Each worker long-polls ``/v1/workers/claim``, computes a step's output (a
number passed along the workflow), and completes the attempt, optionally
claiming the next ones in the same request. They record each attempt's claim
latency and every completion the service accepted (to count steps accepted
twice after a kill -9), and ride out a restart of the service.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import httpx


def work(step_input: dict[str, Any]) -> dict[str, Any]:
    if "n" in step_input:
        return {"v": step_input["n"]}
    if "l" in step_input:
        return {"v": step_input["l"] + step_input["r"]}
    return {"v": step_input["x"] + 1}


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Workers:
    """HTTP workers that claim with long polls and follow ``base`` across restarts."""

    def __init__(
        self, base: str, headers: dict[str, str], count: int, max_steps: int, *, combined: bool
    ) -> None:
        self.base, self.headers, self.count, self.max_steps = base, headers, count, max_steps
        # combined: each completion claims the next attempts in the same request
        self.combined = combined
        self.claim_latency: list[float] = []
        self.accepted: Counter[str] = Counter()
        self.stop = False
        self.errors = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(i) for i in range(self.count)))

    async def _loop(self, index: int) -> None:
        body = {"worker_id": f"bench-{index}", "queues": ["default"],
                "max_steps": self.max_steps, "lease_s": 5, "wait_s": 2}  # fmt: skip
        async with httpx.AsyncClient(timeout=30, headers=self.headers) as http:
            while not self.stop:
                try:
                    r = await http.post(f"{self.base}/v1/workers/claim", json=body)
                    if r.status_code == 204:
                        continue
                    r.raise_for_status()
                    in_hand = list(r.json()["items"])
                    while in_hand:
                        a = in_hand.pop(0)
                        self.claim_latency.append(stamp(a["claimed_at"]) - stamp(a["available_at"]))
                        settle: dict[str, Any] = {"lease_token": a["lease_token"],
                                                  "output": work(a["input"])}  # fmt: skip
                        if self.combined and not in_hand and not self.stop:
                            settle["claim"] = {k: body[k] for k in ("queues", "max_steps", "lease_s")}
                        done = await http.post(
                            f"{self.base}/v1/workers/attempts/{a['id']}/complete", json=settle
                        )
                        if done.status_code == 200:
                            self.accepted[f"{a['run_id']}:{a['step_id']}"] += 1
                            in_hand.extend(done.json().get("claimed") or [])
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(0.2)  # the service is restarting
