"""Lock files that name their holder and heal when it is gone.

A lock is a small JSON file created exclusively (``O_EXCL``): the holder's pid, host, command
line and start time. `acquire` takes one; `heal` clears one whose process no longer runs on this
host (a run killed with SIGKILL, a crashed machine), so a stale lock never blocks later runs;
`describe` says who holds one. Used by `ascale.cli._runfolder.RunFolder` (``--out``) and the model
cache (`ascale.loading`).

A pid can be reused by an unrelated process after its holder died: such a lock reads as held
(the safe side), and `describe` names the pid so that the user can check.
"""

import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["acquire", "describe", "heal", "holder", "is_running", "release"]


def acquire(path: Path) -> bool:
    """Create lock `path` for this process; ``False`` if it exists already."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%d %H:%M"),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return True


def release(path: Path) -> None:
    """Remove lock `path` (if it is there)."""
    path.unlink(missing_ok=True)


def holder(path: Path) -> dict[str, Any] | None:
    """What lock `path` says of its holder (``pid`` an int); ``None`` if unreadable."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        info["pid"] = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, dict) else None


def heal(path: Path) -> dict[str, Any] | None:
    """Clear lock `path` if its holder, on this host, no longer runs; the holder's info if
    cleared, else ``None`` (held, on another host, unreadable, or cleared by another process)."""
    info = holder(path)
    if info is None or info.get("host", socket.gethostname()) != socket.gethostname():
        return None
    if is_running(info["pid"]):
        return None
    aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)  # one process wins the clearing
    except OSError:
        return None
    if holder(aside) != info:  # a new holder took it meanwhile: put its lock back
        os.rename(aside, path)
        return None
    aside.unlink()
    return info


def describe(path: Path) -> str:
    """Who holds lock `path`, for a message: pid, start, and whether it still runs."""
    info = holder(path)
    if info is None:
        return f"lock file {str(path)!r}, unreadable; delete it if no run is using it"
    pid, started, host = info["pid"], info.get("started", "?"), info.get("host")
    if host is not None and host != socket.gethostname():
        state = f"runs on host {host!r}: delete the lock file if it no longer runs"
    else:
        state = "still running" if is_running(pid) else "no longer running"
    return f"pid {pid}, started {started}, {state}; lock file {str(path)!r}"


def is_running(pid: int) -> bool:
    """Whether process `pid` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
