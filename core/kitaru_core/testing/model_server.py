# pyright: strict
r"""Run a `ScriptedModelServer` in its own process until SIGTERM or SIGINT.

Usage:
    python -m kitaru_core.testing.model_server --script script.json --port 0 \\
        --request-log requests.jsonl --port-file port.txt

The chosen port is written to `--port-file` (atomically, once the server is listening) and the
base URL is printed on standard output, so that a test or a demo can start the server, keep it
running while it kills and restarts the agent process, and count the model requests in the log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from kitaru_core.testing._http import ScriptedModelServer
from kitaru_core.testing._script import Script

__all__ = ["build_argument_parser", "main"]


def build_argument_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of the scripted model server.

    Returns:
        The argument parser.
    """
    parser = argparse.ArgumentParser(
        prog="python -m kitaru_core.testing.model_server",
        description="Serve OpenAI-compatible chat completions from a JSON script, for tests and demos.",
    )
    parser.add_argument("--script", required=True, type=Path, help="JSON script file (see Script.from_json).")
    parser.add_argument("--host", default="127.0.0.1", help="Loopback address to bind (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=0, help="Port to bind; 0 picks a free port (default).")
    parser.add_argument(
        "--request-log", type=Path, default=None, help="File to append one JSON line to per model request."
    )
    parser.add_argument(
        "--port-file", type=Path, default=None, help="File to write the chosen port to once listening."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT.

    Args:
        argv: The command-line arguments without the program name; `None` reads `sys.argv`.

    Returns:
        The process exit status: 0 after a clean stop, 2 for an invalid script or address.
    """
    parser = build_argument_parser()
    options = parser.parse_args(argv)
    try:
        script = Script.from_json(options.script)
        server = ScriptedModelServer(
            script, host=options.host, port=options.port, request_log_path=options.request_log
        )
    except (OSError, ValueError) as error:
        print(f"model_server: {error}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    try:
        if options.port_file is not None:
            _write_atomically(options.port_file, f"{server.port}\n")
        print(f"Scripted model server listening on {server.base_url}", flush=True)
        while not stop_requested.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main())
