"""The reports folder over HTTP, as `mlplatform dev` serves it: files as they are, and a drift report's page
(`<name>.html`) rendered from its Evidently snapshot (`<name>.json.xz`) when only the snapshot is stored.

    python -m mlplatform.cli.reports_server PORT --bind 127.0.0.1 --directory <state>/reports
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlplatform.stores.reports import HTML_SUFFIX, ReportUnreadable, render_snapshot, snapshot_path


class ReportsHandler(SimpleHTTPRequestHandler):
    """Static files, plus drift pages rendered on demand (nothing rendered is written back: the folder stays small)."""

    def _stored_snapshot(self) -> Path | None:
        """The snapshot to render for this request: an `.html` page that is not a file but has a snapshot beside it."""
        page = Path(self.translate_path(self.path))  # inside the served directory: `..` and absolute paths cannot leave it
        found = snapshot_path(page)
        return found if page.name.endswith(HTML_SUFFIX) and not page.exists() and found.is_file() else None

    def do_GET(self) -> None:
        snapshot = self._stored_snapshot()
        if snapshot is None:
            super().do_GET()
        else:
            self._send_rendered(snapshot)

    def do_HEAD(self) -> None:
        if self._stored_snapshot() is None:
            super().do_HEAD()
        else:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()

    def _send_rendered(self, snapshot: Path) -> None:
        try:
            body = render_snapshot(snapshot).encode("utf-8")
        except FileNotFoundError:  # removed by retention between the check and the read
            self.send_error(HTTPStatus.NOT_FOUND, f"{snapshot.name} was removed by the retention of drift reports")
            return
        except ReportUnreadable as exc:
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def server(directory: Path, host: str, port: int) -> ThreadingHTTPServer:
    """A threaded server of `directory` (port 0: any free port, read it from `server_address`)."""
    return ThreadingHTTPServer((host, port), partial(ReportsHandler, directory=str(directory)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--directory", type=Path, required=True)
    args = parser.parse_args(argv)
    with server(args.directory, args.bind, args.port) as httpd, contextlib.suppress(KeyboardInterrupt):  # `dev` stopping it: no traceback
        httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
