"""Write docs/performance.md from bench/results/*.json, so the published numbers are the files' numbers.

    python3 bench/report.py            # rewrite docs/performance.md and every quoted figure in README.md and docs/
    python3 bench/report.py --check    # exit 1 if any of them differs from what the JSON files give

A figure quoted in prose is written `<!--fig FILE:KEY.PATH-->3,334<!--/fig-->` (FILE a results file's stem, KEY.PATH
its dotted key, optionally `|x100` for a percentage or `|r` rounded to a whole number): the script rewrites the text
between the markers from the file, so a quoted number cannot drift from its measurement.

Every file becomes one section: its command, machine and date as the file records them ("not recorded" where it
does not), then its numbers as tables. A list of records becomes a table with one row per record; a mapping of
records (queries, endpoints, methods) one row per name; the remaining scalars one key/value table. Nested values
are flattened to dotted names. Earlier runs kept under `history` are left in the JSON files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "performance.md"
SKIP = {"history", "command", "date", "machine", "gpu"}
TITLES = {
    "av_backends": "The AV's engines (transformers and vLLM)", "explorer": "The explorer's lake views at 1M rows",
    "gpu_grpo": "GRPO on one GPU",
    "gpu_label": "Labeling end to end on one GPU", "gpu_sft": "SFT on one GPU", "gpu_stages": "Model stages on one GPU",
    "lake": "Lake queries (DuckDB over Delta)", "long_docs": "Long documents", "pipeline": "Labeling pipeline on CPU",
    "pipeline_50k": "Labeling pipeline on CPU, 10,000 and 50,000 activations",
    "pipeline_warm": "Labeling pipeline on a running Ray cluster", "reliability_load": "Serving under load with a replica killed",
    "retrain_toy": "The retrain loop on the toy kit", "scale_plan": "Scale plan", "search": "Search by meaning (ANN index)",
    "search_libs": "Search libraries compared", "serve_load": "Serving under load",
}


def fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "-"
        a = abs(v)
        return f"{v:,.0f}" if a >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    s = v if isinstance(v, str) else json.dumps(v)
    return s.replace("|", "\\|").replace("\n", " ")


def flat(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(x, (int, float, str)) for x in v) and len(v) > 8:
            out[prefix + k] = f"{len(v)} values, first {fmt(v[0])}, last {fmt(v[-1])}"
        else:
            out[prefix + k] = v
    return out


def table(rows: list[dict], first: str | None = None) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    return lines


def records(v) -> bool:
    return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)


def mapping_of_records(v) -> bool:
    return isinstance(v, dict) and len(v) > 1 and all(isinstance(x, dict) for x in v.values())


def tables(d: dict, prefix: str, scalars: dict, top: bool = False) -> list[str]:
    """Tables for the records in d (lists of records, mappings of records, at any depth); its other values go to
    scalars under dotted names."""
    out: list[str] = []
    for k, v in d.items():
        if k == "history" or (top and k in SKIP and not (k == "gpu" and isinstance(v, dict))):
            continue
        name = prefix + k
        if records(v):
            out += [f"**{name}**", ""] + table([flat(r) for r in v]) + [""]
        elif mapping_of_records(v) and all(not any(records(x) for x in r.values()) for r in v.values()):
            out += [f"**{name}**", ""] + table([{"name": n, **flat(r)} for n, r in v.items()]) + [""]
        elif isinstance(v, dict) and v:
            out += tables(v, name + ".", scalars)
        else:
            scalars[name] = v
    return out


def section(name: str, d: dict) -> list[str]:
    out = [f"## {TITLES.get(name, name)}", ""]
    machine = d.get("machine") if d.get("machine") is not None else d.get("gpu")
    if isinstance(machine, dict):
        machine = ", ".join(f"{k} {fmt(v)}" for k, v in flat(machine).items())
    if d.get("gpu") and isinstance(d.get("gpu"), str) and d.get("machine"):
        machine = f"{d['machine']}; {d['gpu']}"
    script = f"bench/{name.split('_50k')[0].split('_warm')[0]}.py"
    if not (ROOT / script).exists():
        script = "a script under bench/"
    cmd = d.get("command") or f"not recorded in the file (made by {script})"
    out += [f"- command: `{cmd}`" if d.get("command") else f"- command: {cmd}",
            f"- machine: {fmt(machine) if machine else 'not recorded'}",
            f"- date: {d.get('date') or 'not recorded'}",
            f"- file: `bench/results/{name}.json`", ""]
    scalars: dict = {}
    out += tables(d, "", scalars, top=True)
    if scalars:
        out += ["| value | |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in scalars.items()] + [""]
    if "history" in d:
        out += [f"Earlier runs: {len(d['history'])} kept under `history` in the file.", ""]
    return out


def render() -> str:
    lines = ["# Performance", "",
             "Every measurement the project has published, generated by `python3 bench/report.py` from "
             "`bench/results/*.json`; do not edit this page by hand. Each section names the command, the machine and "
             "the date as its file records them. Other files under `bench/results/` (profiles) are not tables.", ""]
    for f in sorted(RESULTS.glob("*.json")):
        lines += section(f.stem, json.loads(f.read_text()))
    return "\n".join(lines).rstrip() + "\n"


FIG = re.compile(r"<!--fig ([\w.-]+):([\w.-]+)(?:\|(x100|r))?-->(.*?)<!--/fig-->", re.S)
PROSE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def lookup(stem: str, path: str, how: str | None) -> str:
    f = RESULTS / f"{stem}.json"
    if not f.exists():
        raise SystemExit(f"a figure names bench/results/{stem}.json, which does not exist")
    v = json.loads(f.read_text())
    for k in path.split("."):
        if not isinstance(v, dict) or k not in v:
            raise SystemExit(f"a figure names {stem}:{path}, but the file has no key {k!r} there")
        v = v[k]
    if how == "x100":
        return f"{100 * v:.1f}"
    if how == "r":
        return f"{v:,.0f}"
    return fmt(v)


def figures(text: str) -> str:
    """`text` with every quoted figure rewritten from its results file."""
    return FIG.sub(lambda m: f"<!--fig {m[1]}:{m[2]}{'|' + m[3] if m[3] else ''}-->{lookup(m[1], m[2], m[3])}"
                             "<!--/fig-->", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/performance.md is out of date")
    args = ap.parse_args()
    pages = {OUT: render()}
    pages.update({p: figures(p.read_text()) for p in PROSE if p != OUT})
    stale = [p for p, text in pages.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date with bench/results: run python3 bench/report.py",
                  file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(pages[p])
        print(f"wrote {p.relative_to(ROOT)}")
    if not stale:
        print("every page already matches bench/results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
