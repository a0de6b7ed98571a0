"""The aggregator's local admin endpoint: ``status``, ``extend`` and ``stop``.

Why a local HTTP endpoint rather than a signed control-topic message: the only key the
aggregator trusts for its own decisions is its own, so a control message would have to be
signed by the aggregator's key, i.e. sent from wherever that key lives, which is the
aggregator's pod; it would also need the broker up, precisely when an operator most wants
``status``. The endpoint binds the loopback interface only (``kubectl exec`` / ``docker
compose exec`` reach it, the network does not) and every request carries a bearer token that
the aggregator writes at start-up to ``state_dir/admin.token`` (mode 0600): whoever can run
``fraudfl admin`` as the service's user on its host may administer it, nobody else.

Requests are queued for the main loop, which owns the orchestrator; ``status`` is answered
from the snapshot the loop publishes after each step, so it answers even mid-round.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import secrets
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib import error as urlerror
from urllib import request as urlrequest

from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

TOKEN_FILE = "admin.token"  # noqa: S105 (a file name, not a token)
ADMIN_HOST = "127.0.0.1"
MAX_BODY = 4096
# How long a request waits for the main loop (a DP training step can hold it a while).
REPLY_TIMEOUT_S = 60.0


@dataclass
class AdminRequest:
    command: str  # "extend" | "stop"
    args: dict[str, Any]
    reply: Future[dict[str, Any]]


def write_token(state_dir: Path) -> str:
    """A fresh token in ``state_dir/admin.token`` (0600), replacing any earlier one."""
    token = secrets.token_urlsafe(32)
    path = state_dir / TOKEN_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    os.replace(tmp, path)
    return token


class AdminServer:
    """Serves ``GET /status``, ``POST /extend`` (``{"rounds": N}``) and ``POST /stop``."""

    def __init__(self, port: int, token: str) -> None:
        self.token = token
        self.requests: queue.Queue[AdminRequest] = queue.Queue()
        self._status: dict[str, Any] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("admin: " + format, *args)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode()):
                    self._answer(401, {"error": "missing or wrong admin token"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
                    return
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._answer(400, {"error": "body is not JSON"})
                    return
                if method == "GET" and self.path == "/status":
                    self._answer(200, server.status())
                elif method == "POST" and self.path in ("/extend", "/stop"):
                    code, reply = server.submit(self.path[1:], body)
                    self._answer(code, reply)
                else:
                    self._answer(404, {"error": f"no {method} {self.path}"})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, sort_keys=True).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        try:
            self._httpd = ThreadingHTTPServer((ADMIN_HOST, port), Handler)
        except OSError as exc:
            raise FraudflError(
                f"cannot serve the admin endpoint on {ADMIN_HOST}:{port}: {exc.strerror or exc}"
            ) from exc
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="admin-http", daemon=True
        )

    def start(self) -> AdminServer:
        self._thread.start()
        log.info("admin endpoint on http://%s:%d (token in state_dir/%s)", ADMIN_HOST,
                 self.port, TOKEN_FILE)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def publish_status(self, status: dict[str, Any]) -> None:
        with self._lock:
            self._status = dict(status)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def submit(self, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reply: Future[dict[str, Any]] = Future()
        self.requests.put(AdminRequest(command, args, reply))
        try:
            return 200, reply.result(timeout=REPLY_TIMEOUT_S)
        except AdminRefused as exc:
            return 409, {"error": str(exc)}
        except TimeoutError:
            return 504, {"error": f"the main loop did not answer within {REPLY_TIMEOUT_S:.0f} s"}

    def pending(self) -> list[AdminRequest]:
        """Requests waiting for the main loop (which answers each one's ``reply``)."""
        out: list[AdminRequest] = []
        while True:
            try:
                out.append(self.requests.get_nowait())
            except queue.Empty:
                return out


class AdminRefused(Exception):
    """The main loop refused a command (the reason goes back to the operator)."""


def call(
    port: int, token: str, command: str, body: dict[str, Any] | None = None,
    *, timeout_s: float = REPLY_TIMEOUT_S + 5,
) -> dict[str, Any]:
    """One admin request from ``fraudfl admin``; errors become :class:`FraudflError`."""
    method = "GET" if command == "status" else "POST"
    data = None if method == "GET" else json.dumps(body or {}).encode()
    req = urlrequest.Request(
        f"http://{ADMIN_HOST}:{port}/{command}", data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urlrequest.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (http only)
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urlerror.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise FraudflError(f"aggregator refused {command}: {detail}") from exc
    except (urlerror.URLError, OSError) as exc:
        raise FraudflError(
            f"cannot reach the aggregator's admin endpoint on {ADMIN_HOST}:{port}: "
            f"{getattr(exc, 'reason', exc)}"
        ) from exc
