"""``Cockpit``: the store, the two OTLP receivers, the page, and the retention timer.

cockpit = Cockpit("cockpit.sqlite3", port=0, otlp_http_port=0, otlp_grpc_port=0)
cockpit.start()            # every port bound (0 = any free one); OSError if one is taken
print(cockpit.page_url)    # http://127.0.0.1:<port>/
...
cockpit.stop()             # listeners closed, the write in flight finished, DB closed
"""

from __future__ import annotations

import logging
import os
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Final, Optional, Union

from cxtrace._cockpit.receiver import (
    Ingest,
    grpc_available,
    otlp_http_handler,
    start_grpc,
    start_http,
)
from cxtrace._cockpit.store import Store
from cxtrace._cockpit.web import page_handler

__all__ = ["Cockpit", "ListenError"]

_log = logging.getLogger(__name__)

DEFAULT_RETENTION_S: Final = 7 * 86400
# How often old data is pruned; the first prune runs at start.
PRUNE_INTERVAL_S: Final = 600.0


class ListenError(OSError):
    """A listener could not bind; ``role`` is "page", "otlp_http" or "otlp_grpc"."""

    def __init__(self, role: str, errno: Optional[int], message: str) -> None:
        super().__init__(errno, message)
        self.role = role

    def __str__(self) -> str:
        return str(self.strerror)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class Cockpit:
    """The local Customer Experience Cockpit (design.md section 9).

    ``otlp_grpc_port=None`` (or grpcio not installed) serves OTLP over HTTP only; then
    ``otlp_grpc_endpoint`` is None.
    """

    def __init__(
        self,
        db_path: Union[str, os.PathLike[str]],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        otlp_http_port: int = 4318,
        otlp_grpc_port: Optional[int] = 4317,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        if not retention_s > 0:
            raise ValueError(f"retention_s={retention_s!r}: expected a positive number of seconds")
        for name, value in (
            ("port", port),
            ("otlp_http_port", otlp_http_port),
            ("otlp_grpc_port", 0 if otlp_grpc_port is None else otlp_grpc_port),
        ):
            if not 0 <= value <= 65535:
                raise ValueError(f"{name}={value!r}: expected a port number 0-65535")
        self.db_path = os.fspath(db_path)
        self.host = host
        self.retention_s = retention_s
        self._wanted = (port, otlp_http_port, otlp_grpc_port)
        self._store: Optional[Store] = None
        self._ingest: Optional[Ingest] = None
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
        self._grpc: Any = None
        self._stopping = threading.Event()
        self._pruner: Optional[threading.Thread] = None
        self.page_port = 0
        self.otlp_http_port = 0
        self.otlp_grpc_port: Optional[int] = None

    def __repr__(self) -> str:
        return f"Cockpit({self.db_path!r}, page={self.page_port}, otlp_http={self.otlp_http_port})"

    # ------------------------------------------------------------------ endpoints

    @property
    def page_url(self) -> str:
        return _url(self.host, self.page_port) + "/"

    @property
    def otlp_http_endpoint(self) -> str:
        return _url(self.host, self.otlp_http_port)

    @property
    def otlp_grpc_endpoint(self) -> Optional[str]:
        if self.otlp_grpc_port is None:
            return None
        return _url(self.host, self.otlp_grpc_port)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError(f"{self!r} is not running")
        return self._store

    @property
    def ingest(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError(f"{self!r} is not running")
        return self._ingest

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Cockpit:
        """Open the database and bind every listener; returns when all serve.

        Raises OSError naming the address when a port is taken (nothing stays bound).
        """
        if self._store is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._stopping.clear()
        store = Store(self.db_path, retention_s=self.retention_s)
        self._store = store
        self._ingest = ingest = Ingest(store)
        try:
            self._listen(ingest)
        except BaseException:
            self.stop()
            raise
        self._pruner = threading.Thread(target=self._prune_loop, name="cockpit-prune", daemon=True)
        self._pruner.start()
        return self

    def _listen(self, ingest: Ingest) -> None:
        host = self.host
        page_port, http_port, grpc_port = self._wanted
        self.otlp_http_port = self._bind(
            "otlp_http", http_port, otlp_http_handler(ingest), "cockpit-otlp-http"
        )
        if grpc_port is not None:
            if grpc_available():
                try:
                    self._grpc, self.otlp_grpc_port = start_grpc(ingest, host, grpc_port)
                except OSError as exc:
                    raise ListenError("otlp_grpc", exc.errno, str(exc)) from exc
            else:
                _log.warning(
                    "grpcio is not installed: the cockpit receives OTLP over HTTP only "
                    "(pip install 'cxtrace[cockpit]' for gRPC)"
                )
        self.page_port = self._bind("page", page_port, page_handler(self), "cockpit-page")

    def _bind(self, role: str, port: int, handler: Any, name: str) -> int:
        try:
            server, thread = start_http(self.host, port, handler, name)
        except OSError as exc:
            what = "the page" if role == "page" else "OTLP/HTTP"
            raise ListenError(
                role,
                exc.errno,
                f"cannot listen on {self.host}:{port} for {what}: {exc.strerror or exc}",
            ) from exc
        self._servers.append((server, thread))
        return int(server.server_address[1])

    def stop(self) -> None:
        """Close the listeners, let the write in flight finish, close the database."""
        self._stopping.set()
        servers, self._servers = self._servers, []
        for server, _ in servers:
            server.shutdown()
            server.server_close()
        for _, thread in servers:
            thread.join(timeout=5)
        grpc_server, self._grpc = self._grpc, None
        if grpc_server is not None:
            grpc_server.stop(grace=2.0).wait(timeout=5)
        pruner, self._pruner = self._pruner, None
        if pruner is not None:
            pruner.join(timeout=5)
        store, self._store = self._store, None
        if store is not None:
            store.close()  # waits for the transaction in progress
        self._ingest = None

    def __enter__(self) -> Cockpit:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _prune_loop(self) -> None:
        while True:
            store = self._store
            if store is None:
                return
            try:
                deleted = store.prune(time.time_ns())
            except Exception:  # noqa: BLE001 - a full disk must not stop the receiver; try again later
                if self._stopping.is_set():
                    return
                _log.warning("cockpit could not prune old data", exc_info=True)
            else:
                if deleted:
                    _log.debug("cockpit pruned %d rows older than the retention", deleted)
            if self._stopping.wait(PRUNE_INTERVAL_S):
                return
