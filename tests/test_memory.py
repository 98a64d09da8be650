"""Memory stays bounded while the collector is down, whatever the traffic looks like.

Each run is its own process (tests/apps/memory_load.py): the real OTLP exporter points at
a closed port, the SDK's batch span processor keeps its default limits (a queue of 2048
spans), and every request brings a new path, query and segment value. RSS is read from
/proc after a gc at each checkpoint. The short runs (5,000 requests through each
protocol) are part of the suite; the long ones (``nox -s soak``) send 200,000.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otlp_receiver import GRPC_AVAILABLE

APPS = Path(__file__).resolve().parent / "apps"
QUEUE_LIMIT = 2048  # OTEL_BSP_MAX_QUEUE_SIZE's default

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_load(protocol: str, requests: int, *checkpoints: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXTRACE_", "OTEL_"))}
    env.update(
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        CXTRACE_INTEGRATIONS="flask",
        CXTRACE_SEGMENT_HEADER="X-Tier",
    )
    result = subprocess.run(
        [sys.executable, str(APPS / "memory_load.py"), str(requests), *map(str, checkpoints)],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def check_bounded(report: dict[str, Any], budget_mb: float) -> None:
    points = report["points"]
    assert report["max_queue"] <= QUEUE_LIMIT
    for point in points:
        assert point["queue"] <= QUEUE_LIMIT
        assert point["segments"] <= 50  # design.md section 6: at most 50 distinct, then other
        assert point["segment_cache"] <= 1024
        assert point["tally_keys"] <= 51  # one route and method: 50 segments + other
    first, last = points[0], points[-1]
    growth_mb = (last["rss"] - first["rss"]) / 2**20
    assert growth_mb < budget_mb, (
        f"RSS grew {growth_mb:.1f} MB from {first['requests']} to {last['requests']} requests"
    )
    # Objects the gc tracks stop growing once the queue is full.
    assert last["gc_objects"] - first["gc_objects"] < 5_000, points


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_memory_is_bounded_with_the_collector_down(protocol: str) -> None:
    # The soak test's short twin: 2,500 requests fill the queue (and the batch in flight);
    # then nothing may grow.
    if protocol == "grpc" and not GRPC_AVAILABLE:
        pytest.skip("grpcio is not installed")
    report = run_load(protocol, 5_000, 2_500)
    print(json.dumps(report))
    check_bounded(report, budget_mb=8)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.soak
@pytest.mark.skipif(os.environ.get("RUN_SOAK") != "1", reason="long; run by nox -s soak")
def test_memory_soak_200k_requests_with_the_collector_down(protocol: str) -> None:
    if protocol == "grpc" and not GRPC_AVAILABLE:
        pytest.skip("grpcio is not installed")
    report = run_load(protocol, 200_000, 10_000, 50_000, 100_000)
    print(json.dumps(report))  # the figures for docs/reliability.md (pytest -s)
    check_bounded(report, budget_mb=20)
