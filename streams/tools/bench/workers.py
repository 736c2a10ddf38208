"""The worker processes under test: started, watched, scraped and stopped by the bench."""

from __future__ import annotations

from pathlib import Path

import click

from streams.settings import Settings
from streams.tools.embedded import free_port
from streams.tools.scrape import metric_sum, scrape
from streams.tools.up import spawn_worker, stop_process

# What each worker process runs (``python -m ...``): the product's worker, or
# the same worker built with the near-free models of ``--free-models``.
WORKER = ("streams.cli", "worker")
FREE_MODELS_WORKER = ("streams.tools.bench.free_models",)


def _proc_status_mb(pid: int, field: str) -> float | None:
    """A memory field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``) in MiB; ``None`` once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set of a live process, in MiB."""
    return _proc_status_mb(pid, "VmHWM")


def current_rss_mb(pid: int) -> float | None:
    return _proc_status_mb(pid, "VmRSS")


class Workers:
    """``n`` worker processes, each with its own metrics port, data directory and log in ``run_dir``."""

    def __init__(self, settings: Settings, n: int, run_dir: Path, *, free_models: bool = False) -> None:
        self.ports: list[int] = []
        self.procs = []
        self.logs: list[Path] = []
        for k in range(n):
            s = settings.replace(metrics_port=free_port(),
                                 data_dir=str(run_dir / f"worker{k}"))
            log = run_dir / f"worker{k}.log"
            # "info", the worker's default: at "warning" Faust's progress spinner
            # lowers the root logger to DEBUG, which costs ~4% of the worker.
            self.procs.append(spawn_worker(s, log, loglevel="info",
                                           command=FREE_MODELS_WORKER if free_models else WORKER))
            self.ports.append(s.metrics_port)
            self.logs.append(log)
        self.peak_rss: list[float] = [0.0] * n

    def check_alive(self) -> None:
        """Raise, with the end of its log, if a worker has exited."""
        for proc, log in zip(self.procs, self.logs):
            if proc.poll() is not None:
                raise click.ClickException(f"worker exited with {proc.returncode}; log {log}:\n"
                                           f"{log.read_text(errors='replace')[-3000:]}")

    def scrape_all(self) -> list[dict[str, float]]:
        """Every worker's metrics (and their peak RSS so far, read while they are alive)."""
        for k, proc in enumerate(self.procs):
            rss = peak_rss_mb(proc.pid)
            if rss:
                self.peak_rss[k] = max(self.peak_rss[k], rss)
        return [scrape(p) for p in self.ports]

    @staticmethod
    def total(samples: list[dict[str, float]], name: str) -> float:
        """Metric ``name`` summed over its label sets and over the workers."""
        return sum(metric_sum(s, name) for s in samples)

    def rss_now(self) -> list[float | None]:
        return [current_rss_mb(p.pid) for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)
