"""Process facts for summaries, benchmarks and tests: this process's peak memory, a process's descendants."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's own memory high-water mark in MiB (VmHWM resets at exec; ru_maxrss can carry a parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_tree(pid: int) -> dict[int, str]:
    """pid -> command line of `pid` and every descendant, followed by parent pid (Ray puts its workers in process
    groups of their own, so a process group does not find them). Linux /proc only; {} elsewhere."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended while we looked
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [pid]
    while todo:  # command lines of the tree's processes only: half the reads of a walk on a busy machine
        p = todo.pop()
        try:
            out[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended while we looked: its children were reparented, not ours any more
        todo.extend(children.get(p, []))
    return out
