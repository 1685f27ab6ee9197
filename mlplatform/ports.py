"""Whether a server's configured address can be bound, asked before anything starts: a port taken by another process
was otherwise found only after the server's start-up work, as one line of its log."""

from __future__ import annotations

import socket


def bind_error(host: str, port: int) -> str | None:
    """Why (host, port) cannot be bound now, as the system says it, or None when it can. With SO_REUSEADDR, as servers
    set it: a port in TIME_WAIT is free to them."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:  # the address taken, not this machine's, or its family not supported here
        return exc.strerror or str(exc)
    return None


def free_port() -> int:
    """A loopback port free at this moment, for a server this project starts itself (a test's, a benchmark's, a
    throwaway stack's); another process may take it before it is bound: callers retry or accept that."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
