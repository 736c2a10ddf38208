"""``--py-spy``: sampling every worker during a phase (py-spy is optional)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from streams.tools.bench.workers import Workers


def py_spy_command() -> str | None:
    """The py-spy executable (on PATH or beside this Python), if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@contextlib.contextmanager
def profiled(pool: Workers, out_dir: Path | None, phase: str) -> Iterator[None]:
    """Record every worker of ``pool`` while the block runs: collapsed stacks, all threads, idle
    included, in ``out_dir/<phase>-worker<k>.collapsed.txt``. Nothing happens when ``out_dir`` is ``None``."""
    if out_dir is None:
        yield
        return
    exe = py_spy_command()
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([exe, "record", "--pid", str(proc.pid), "--format", "raw", "--idle", "--threads",
                               "--rate", "200", "--output", str(out_dir / f"{phase}-worker{k}.collapsed.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for k, proc in enumerate(pool.procs)]
    try:
        yield
    finally:
        # SIGINT makes py-spy write what it sampled.
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
