"""RUM under a pre-fork server: ``cxtrace run -- gunicorn --workers 2``, no key configured.

docs/rum.md promises that workers forked after ``instrument()`` share the random signing
key their master made, so a beacon may reach another worker than the one that served its
page. Proven here: some browser spans come from a different worker (``service.instance.id``)
than their page's server span, and every beacon was accepted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from otlp_receiver import Receiver

APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_forked_workers_verify_each_others_pages_without_a_key(
    otlp: Receiver, tmp_path: Path
) -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXTRACE_", "OTEL_"))}
    env.update(
        otlp.env(),
        CXTRACE_RUM="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
        HOME=str(tmp_path),  # gunicorn >= 24 keeps a control socket under ~/.gunicorn
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
    )
    log = tmp_path / "gunicorn.log"
    argv = [sys.executable, "-m", "cxtrace", "run", "--", "gunicorn", f"--chdir={APPS}"]
    argv += [f"--bind=127.0.0.1:{port}", "--workers=2", "rum_app:app"]
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)  # polling for readiness, not for data
        base = f"http://127.0.0.1:{port}"

        def load(_: int) -> tuple[str, str]:
            html = requests.get(f"{base}/page", timeout=10).text
            found = re.search(r'data-cx="([^"]+)"', html)
            pid = re.search(r"<title>(\d+)</title>", html)
            assert found is not None, html
            assert pid is not None, html
            return pid.group(1), found.group(1)

        def report(token: str) -> int:
            beacon = {"v": 1, "cx": token, "ttfb": 3, "load": 30, "end": 40}
            return requests.post(
                f"{base}/_cxtrace/rum",
                data=json.dumps(beacon),
                headers={"Content-Type": "text/plain;charset=UTF-8", "Connection": "close"},
                timeout=10,
            ).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            pages = list(pool.map(load, range(32)))
            assert len({pid for pid, _ in pages}) == 2  # both workers served pages
            statuses = list(pool.map(report, [token for _, token in pages]))
        assert statuses == [204] * len(pages), log.read_text()

        otlp.wait_for(lambda r: len(r.spans_named("browser.page_load")) == len(pages), 10)
        otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) == len(pages), 10)
        worker_of = {s.span_id: s.resource["service.instance.id"] for s in otlp.spans}
        crossed = [
            s
            for s in otlp.spans_named("browser.page_load")
            if s.resource["service.instance.id"] != worker_of[str(s.parent_span_id)]
        ]
        assert crossed  # beacons verified by the other worker than their page's
        assert "Traceback" not in log.read_text()
        assert "RUM beacon dropped" not in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
