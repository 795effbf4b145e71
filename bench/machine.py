"""Facts about where and with what a run was made: machine, Python, packages."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "queueing-toolkit",
    "pika",
    "SQLAlchemy",
    "psycopg",
    "PyMySQL",
    "cloudpickle",
    "celery",
    "kombu",
    "dramatiq",
    "rq",
    "redis",
    "huey",
    "procrastinate",
    "pgqueuer",
)


def name() -> str:
    """The machine's host name, safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", platform.node() or "machine")


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    """Total memory in GiB (Linux /proc/meminfo)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def describe() -> str:
    """One line: CPU, cores, memory, operating system."""
    return (
        f"{name()}: {cpu_model()}, {os.cpu_count()} cores, {memory_gib():.1f} GiB, "
        f"{platform.system()} {platform.release()}"
    )


def python() -> str:
    """The Python implementation and version."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages measured ("not installed" when absent)."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
