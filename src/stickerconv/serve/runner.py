"""Run the app with uvicorn in a background thread (tests, benchmarks, notebooks); ``stickerconv serve``
runs it in the foreground instead."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


class ServerThread:
    """Serves ``app`` on ``host`` at a free port in a daemon thread; a context manager.

    The socket is bound before uvicorn starts, so the port cannot be taken in between."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", log_level: str = "warning"):
        self.app, self.host, self.log_level = app, host, log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerThread:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets; without it every keep-alive
        # request waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self._socket, self.port = sock, sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=self.log_level, lifespan="off", timeout_keep_alive=30, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Shut uvicorn down and release the port; safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
