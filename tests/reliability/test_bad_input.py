"""The bad input catalogue: one bad input per case, fed to a real entry point, and what must hold for each.

Refusals (the CLI, the job config, the sidecars and checkpoints, the lake, the HTTP API): the CLI exits 2 with one
line `error: ...` that names the input (the path, the key, the flag) and says the fix; HTTP answers a 4xx with such
a message, never a 5xx. Every table the command could have written stays at its version and every file under the
lake stays as it was (nothing partially written; empty folders left by a table whose first commit failed are named
in the report). The read-only and full-disk cases need tmpfs mounts and skip where mounting is refused. The CLI cases
run `nla.cli.main.main` in this process, with `nla label` / `nla serve` handing over to `nla.jobs.label` / `serve`
in-process instead of by exec (the same code after argument parsing, without a process start each);
`test_the_installed_cli_agrees` runs a few through real `nla` processes and checks they print the same line and
exit 2.

Bad documents inside a corpus are not refused: one labeling run on local Ray reads a 10 MB document, non-UTF-8
lines and files, a line that is not JSON, an empty text and a corrupt parquet shard, labels what is good (the 10 MB
document cut to extract.max_length tokens), exits 0, writes no row for what is bad and names each bad document
(shard and line) and the skipped shard in its summary and runs row. Not here: SQL escapes (test_sandbox.py), kills
and crashes (test_faults.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.reliability.conftest import JOB_ARGS, report
from tests.reliability.test_sandbox import versions
from tests.serve.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BIG_DOC_BYTES = 10 * 2**20


# ---- the bad inputs --------------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """Paths of every bad (and good) input the cases point at; {name} in a case's arguments is one of these."""

    kit: Path  # the toy kit (base/, av/, ar/)
    corpus: Path  # a good corpus
    lake: Path  # a labeled lake (a copy of the reference), the one a case writes to unless it names another
    tmp: Path
    empty: Path  # a corpus folder with no shards
    csv: Path  # a corpus file of an unknown type
    typo_yaml: Path  # toy.yaml with `modles:` for `models:`
    broken_yaml: Path  # not YAML
    latin1_yaml: Path  # toy.yaml saved as Latin-1 (a non-UTF-8 byte)
    trunc_av: Path  # the toy AV with model.safetensors cut in half
    trunc_ar: Path  # the toy AR with value_head.safetensors cut in half
    split_av: Path  # the toy AV whose sidecar marker encodes to two tokens
    marker: str  # that marker
    marker_ids: list[int]  # its two token ids
    narrow_ar: Path  # the AR and the base of a real pair of d=32 (layer 1, like the toy kit)
    narrow_base: Path
    narrow_lake: Path  # a lake whose activations table stores d=32
    fresh: Path  # a lake folder that does not exist yet
    lake_file: Path  # a regular file where the lake folder should be
    v64: Path  # .npy of vectors with d=64
    nan: Path  # .npy of 3 vectors, row 1 NaN
    cut_npy: Path  # .npy cut in half
    ro: Path | None  # a read-only mount holding a copy of the labeled lake (None: mounts refused here)
    full: Path | None  # a full tmpfs holding a copy of the labeled lake
    port: int  # a free TCP port


def mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a tmpfs of `size` at `where`; False where mounting is refused (not root, no CAP_SYS_ADMIN, no mount)."""
    where.mkdir(parents=True, exist_ok=True)
    return shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True).returncode == 0


def fill(folder: Path) -> None:
    """Write a file until the disk is full."""
    with (folder / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.fixture(scope="module")
def bench(bad_corpus_job, reference, toy_kit, pair, make_base, tmp_path_factory):
    from nla import hf
    from nla.lake.store import Lake
    from nla.schemas import ACTIVATIONS

    tmp = tmp_path_factory.mktemp("bad-input")
    lake = tmp / "lake"
    shutil.copytree(reference.lake, lake)
    (tmp / "empty").mkdir()
    (tmp / "docs.csv").write_text("id,text\n1,a heavy storm\n")
    toy_yaml = (ROOT / "jobs/configs/toy.yaml").read_text(encoding="utf-8")
    (tmp / "typo.yaml").write_text(toy_yaml.replace("\nmodels:", "\nmodles:"), encoding="utf-8")
    (tmp / "broken.yaml").write_text("models: {base: toy, av: [toy\n", encoding="utf-8")
    (tmp / "latin1.yaml").write_bytes(toy_yaml.replace("laptop", "portátil").encode("latin-1"))
    trunc_av, trunc_ar, split_av = (shutil.copytree(toy_kit / r, tmp / n)
                                    for r, n in (("av", "trunc-av"), ("ar", "trunc-ar"), ("av", "split-av")))
    for f in (trunc_av / "model.safetensors", trunc_ar / "value_head.safetensors"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    tok = hf.load_tokenizer(toy_kit / "av")
    marker = next(c for c in "éüñçøåßжяλπ€№ɐʃ" if len(tok.encode(c, add_special_tokens=False)) == 2)
    sidecar = yaml.safe_load((split_av / "nla_meta.yaml").read_text(encoding="utf-8"))
    sidecar["tokens"]["injection_char"] = marker
    (split_av / "nla_meta.yaml").write_text(yaml.safe_dump(sidecar, allow_unicode=True), encoding="utf-8")
    Lake(tmp / "narrow-lake").create(ACTIVATIONS, d=32)
    (tmp / "lake-file").write_text("not a folder\n")
    np.save(tmp / "v64.npy", np.ones((1, 64), np.float32))
    nan = np.ones((3, 128), np.float32)
    nan[1, 7] = np.nan
    np.save(tmp / "nan.npy", nan)
    (tmp / "cut.npy").write_bytes((tmp / "nan.npy").read_bytes()[:300])
    mounts = []
    ro = full = None
    if mount_tmpfs(tmp / "ro", "16m"):
        mounts.append(tmp / "ro")
        shutil.copytree(lake, tmp / "ro" / "lake")
        if subprocess.run(["mount", "-o", "remount,ro", str(tmp / "ro")], capture_output=True).returncode == 0:
            ro = tmp / "ro" / "lake"
    if mount_tmpfs(tmp / "full", "16m"):
        mounts.append(tmp / "full")
        shutil.copytree(lake, tmp / "full" / "lake")
        fill(tmp / "full")
        full = tmp / "full" / "lake"
    try:
        yield Bench(kit=toy_kit, corpus=reference.corpus, lake=lake, tmp=tmp, empty=tmp / "empty", csv=tmp / "docs.csv",
                    typo_yaml=tmp / "typo.yaml", broken_yaml=tmp / "broken.yaml", latin1_yaml=tmp / "latin1.yaml",
                    trunc_av=trunc_av, trunc_ar=trunc_ar, split_av=split_av, marker=marker,
                    marker_ids=tok.encode(marker, add_special_tokens=False), narrow_ar=pair[1],
                    narrow_base=make_base("llama"), narrow_lake=tmp / "narrow-lake", fresh=tmp / "fresh-lake",
                    lake_file=tmp / "lake-file", v64=tmp / "v64.npy", nan=tmp / "nan.npy", cut_npy=tmp / "cut.npy",
                    ro=ro, full=full, port=free_port())
    finally:
        for m in mounts:
            subprocess.run(["umount", str(m)], capture_output=True)


# ---- running the CLI and checking its answer -------------------------------------------------------------------------
def handover(_executable: str, argv: list[str]) -> None:
    """`os.execv(python, [python, -m, MODULE, *args])` as the CLI does it, run in this process: MODULE's main(args)
    with Ray's start refused (every case here must be refused before any work), ending in SystemExit(its code)."""
    import importlib

    import ray

    assert argv[1] == "-m", argv

    def no_ray(*a, **k):
        raise AssertionError(f"{' '.join(argv[2:])} started Ray: the bad input was not refused before the work")

    module = importlib.import_module(argv[2] if argv[2] != "nla.serve" else "nla.serve.__main__")
    init, ray.init = ray.init, no_ray
    try:
        raise SystemExit(module.main(argv[3:]))
    finally:
        ray.init = init


def cli(args: list[str], monkeypatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nla ARGS`, in this process."""
    from nla.cli.main import main

    monkeypatch.setattr(os, "execv", handover)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    monkeypatch.undo()
    return code, out.getvalue(), err.getvalue()


def nla_process(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "nla.cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def state(lake: Path) -> tuple[bool, dict[str, int], list[tuple]]:
    """Whether the lake path exists, every table's version and every file under it (path, size, mtime): equal
    states mean the command committed nothing and left no file behind, whole or partial."""
    if not lake.exists():
        return False, {}, []
    files = sorted((str(p.relative_to(lake)), p.stat().st_size, p.stat().st_mtime_ns) for p in lake.rglob("*")
                   if p.is_file())
    return True, versions(lake), files


def folders(lake: Path) -> set[str]:
    return {str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_dir()} if lake.is_dir() else set()


def error_line(code: int, stderr: str, what: str) -> str:
    """The one `error: ...` line of a refusal (exit 2, nothing else on stderr, no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (what, code, stderr[-3000:])
    return lines[0]


CLI = [  # (case, `nla` arguments, words the error line must hold; {name} = a Bench path)
    ("config typo in an override", "label input={corpus} --lake {lake} sampling.sample=2",
     ["unknown key 'sampling.sample'", "Did you mean 'sampling.samples'?", "Fix:"]),
    ("config typo in the YAML file", "label --config {typo_yaml} input={corpus} --lake {lake}",
     ["config {typo_yaml}", "unknown key 'modles'", "Did you mean 'models'?", "Fix:"]),
    ("config value of the wrong type", "label input={corpus} --lake {lake} sampling.samples=many",
     ["key 'sampling.samples' is 'many'; expected int", "Fix:"]),
    ("config value outside its choices", "extract input={corpus} --lake {lake} models.dtype=fp8",
     ["key 'models.dtype' is 'fp8'", "Fix: choose one of ['float32', 'bfloat16', 'float16']"]),
    ("config file that is not YAML", "label --config {broken_yaml} --lake {lake}",
     ["config {broken_yaml}: not valid YAML", "Fix:"]),
    ("config file that is not UTF-8", "label --config {latin1_yaml} --lake {lake}",
     ["config {latin1_yaml}: not UTF-8", "Fix: save it as UTF-8"]),
    ("an override without '='", "label input={corpus} --lake {lake} bogus",
     ["'bogus': overrides are KEY=VALUE", "Fix:"]),
    ("an empty corpus folder", "label input={empty} --lake {lake}",
     ["input {empty}: no *.parquet, *.jsonl or *.txt shards found", "Fix:"]),
    ("a corpus path that does not exist", "extract input={tmp}/no-corpus --lake {lake}",
     ["input {tmp}/no-corpus: no such file or folder", "Fix:"]),
    ("a corpus file of an unknown type", "label input={csv} --lake {lake}",
     ["input {csv}: unknown file type '.csv'", "Fix:"]),
    ("truncated AV safetensors", "label input={corpus} --lake {lake} models.av={trunc_av}",
     ["{trunc_av}/model.safetensors: unreadable", "Fix: the file is truncated or corrupt"]),
    ("a sidecar whose marker splits into two tokens", "label input={corpus} --lake {lake} models.av={split_av}",
     ["{split_av}/nla_meta.yaml", "'tokens.injection_char' '{marker}' encodes to {marker_ids}", "Fix:"]),
    ("the AR folder given as the AV", "label input={corpus} --lake {lake} models.av={kit}/ar",
     ["{kit}/ar/nla_meta.yaml: role is 'ar' but this loader needs 'av'", "Fix:"]),
    ("d mismatch: AR d=32, AV d=128", "label input={corpus} --lake {lake} models.ar={narrow_ar}",
     ["models.ar {narrow_ar} reads layer 1 (d=32)", "(d=128)", "Fix: use the AV/AR pair trained together"]),
    ("d mismatch: base d=32, AV d=128", "extract input={corpus} --lake {lake} models.base={narrow_base}",
     ["models.base {narrow_base} has d=32 but the AV reads d=128", "Fix:"]),
    ("d mismatch: activations table d=32, AV d=128", "label input={corpus} --lake {narrow_lake}",
     ["lake {narrow_lake}: its activations have d=32, these models d=128", "Fix:"]),
    ("d mismatch: --vectors d=64, AV d=128", "explain --av {kit}/av --vectors {v64}",
     ["--vectors {v64}: shape (1, 64)", "d_model=128", "Fix:"]),
    ("NaN vectors to explain", "explain --av {kit}/av --vectors {nan}",
     ["--vectors {nan}: rows [1] contain NaN or inf", "Fix:"]),
    ("a NaN vector to score", "score --ar {kit}/ar --explanation weather --vectors {nan} --row 1",
     ["--vectors {nan}: rows [1] contain NaN or inf", "Fix:"]),
    ("a truncated .npy file", "score --ar {kit}/ar --explanation weather --vectors {cut_npy}",
     ["--vectors {cut_npy}: not a readable .npy array", "Fix:"]),
    ("a --row outside the file", "score --ar {kit}/ar --explanation weather --vectors {nan} --row 3",
     ["--row [3]: {nan} has rows 0..2", "Fix:"]),
    ("relabel a lake with no activations", "label --from-activations --lake {fresh}",
     ["lake {fresh} has no activations to label", "Fix: run `nla extract` first"]),
    ("a lake path that is a file", "label input={corpus} --lake {lake_file}",
     ["lake {lake_file}: cannot write there", "Fix:"]),
    ("a lake on a read-only disk (label)", "label input={corpus} --lake {ro}",
     ["lake {ro}: cannot write there (Read-only file system)", "Fix:"]),
    ("a lake on a read-only disk (mine)", "mine --where 'mse > 0' --name hard --lake {ro}",
     ["'training_sets/hard' in lake {ro}: the write failed (Read-only file system)", "Fix:"]),
    ("a lake on a full disk (mine)", "mine --where 'mse > 0' --name hard --lake {full}",
     ["'training_sets/hard' in lake {full}: the write failed (No space left on device)", "Fix:"]),
    ("a training-set name with a space", "mine --where 'mse > 0' --name 'hard v1' --lake {lake}",
     ["--name 'hard v1'", "Fix: use letters, digits"]),
    ("a query of a table that does not exist", "query 'SELECT * FROM explanation' --lake {lake}",
     ["explanation", "Tables here:", "Fix:"]),
    ("a query with a function that does not exist", "query 'SELECT foo(mse) FROM explanations' --lake {lake}",
     ["Function with name foo does not exist", "Fix: check the function's name", "nearest(query, k)"]),
    ("a query of a lake folder that does not exist", "query 'SELECT 1' --lake {fresh}/nope",
     ["lake {fresh}/nope: no such folder", "Fix:"]),
    ("a time-travel version that does not exist", "query 'SELECT 1' --at explanations=999 --lake {lake}",
     ["table 'explanations' has no version 999", "Fix:"]),
    ("search a lake with no activations", "search weather --lake {fresh}",
     ["lake {fresh} has no activations table to search", "Fix: run `nla label` first"]),
    ("keyword search of a lake with no explanations", "search weather --keyword --lake {fresh}",
     ["lake {fresh} has no explanations table to search", "Fix: run `nla label` first"]),
    ("a query of a lake path that is a file", "tables --lake {lake_file}",
     ["lake {lake_file}: a file, not a folder", "Fix: pass --lake the folder"]),
    # counts and durations below their range: refused by name, never used or dropped (`--steps 0` was ignored)
    ("a row limit below one", "query 'SELECT 1' --limit 0 --lake {lake}", ["--limit 0: must be >= 1."]),
    ("a timeout that is not above zero", "query 'SELECT 1' --timeout -3 --lake {lake}",
     ["--timeout -3.0: must be a number above 0."]),
    ("a toy corpus with more shards than documents", "toy corpus --docs 3 --shards 5 --out {tmp}/corpus-5",
     ["--shards 5: more shards than the 3 documents", "Fix:"]),
    ("an injection scale below zero", "init --base {kit}/base --layer 1 --injection-scale -2 --out {tmp}/init",
     ["injection_scale (--injection-scale) -2.0: must be an L2 norm above 0", "Fix:"]),
    ("training for zero steps", "train sft --role ar --data hard --steps 0 --lake {lake}",
     ["sft.steps=0: must be >= 1", "Fix: e.g. --steps 100"]),
    ("training on zero workers", "train grpo --data activations --workers 0 --lake {lake}",
     ["scaling.workers=0: must be >= 1", "Fix:"]),
    # an output path that cannot be written: one line naming it (was an OSError traceback, exit 1)
    ("a query result into a folder that does not exist", "query 'SELECT 1' --format csv --out {fresh}/no/x.csv "
     "--lake {lake}", ["{fresh}/no/x.csv: No such file or directory", "Fix: check that the path and its folder"]),
    ("an export into a path that is a file", "export hf --lake {lake} --out {lake_file}",
     ["{lake_file}: Not a directory", "Fix: check that the path"]),
    ("search with an AR of another width", "search weather --ar {narrow_ar} --lake {lake}",
     ["--ar {narrow_ar} has d=32 but the activations table stores d=128", "Fix:"]),
    ("serve a truncated AR", "serve --port {port} models.ar={trunc_ar}",
     ["{trunc_ar}/value_head.safetensors: unreadable", "Fix: the file is truncated or corrupt"]),
    # ray.init retries an address where nothing answers without end (seen: 2 minutes of warnings, then killed)
    ("a Ray address where no cluster answers (label)", "label input={corpus} --lake {lake} ray_address=127.0.0.1:{port}",
     ["ray_address=127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}", "Fix: start a head there",
      "leave ray_address empty"]),
    ("a Ray address where no cluster answers (serve)", "serve --port {port} ray_address=[::1]:{port}",
     ["ray_address=[::1]:{port}: no Ray cluster answers at ::1:{port}", "Fix:"]),
    ("a Ray address that is not one", "extract input={corpus} --lake {lake} ray_address=head-node",
     ["ray_address=head-node: not a Ray address", "Fix: write host:port"]),
]


def watched(args: list[str], b: Bench) -> Path:
    """The lake a command would write: its --lake, else the labeled lake."""
    return Path(args[args.index("--lake") + 1]) if "--lake" in args else b.lake


def fill_in(template: str, b: Bench) -> str:
    return template.format(**vars(b))


@pytest.mark.parametrize("case, args, words", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses(bench, monkeypatch, case, args, words):
    if ("{ro}" in args and bench.ro is None) or ("{full}" in args and bench.full is None):
        pytest.skip("tmpfs mounts are refused here (not root, or no CAP_SYS_ADMIN)")
    argv = shlex.split(fill_in(args, bench))
    lake = watched(argv, bench)
    before, dirs = state(lake), folders(lake)
    code, _, err = cli(argv, monkeypatch)
    line = error_line(code, err, case)
    missing = [w for w in (fill_in(w, bench) for w in words) if w not in line]
    assert not missing, (case, missing, line)
    assert state(lake) == before, f"{case}: the lake changed"
    kept = "unchanged: every table at its version, no file added or changed" if before[0] else "absent, still absent"
    if new := sorted(folders(lake) - dirs):  # a table whose first commit failed leaves its empty folders
        kept += f" (empty folders left: {', '.join(new)}; Lake.names() counts no table there)"
    report(f"{case}: nla {shlex.join(argv)}", f"exit 2, one line naming the input and the fix: {line}; lake {kept}")


def test_ray_address_from_the_environment_is_checked_too(bench, monkeypatch):
    """$RAY_ADDRESS is where a job goes when the config names no cluster: a dead one is refused as the key is."""
    argv = shlex.split(fill_in("label input={corpus} --lake {lake}", bench))
    before = state(bench.lake)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{bench.port}")
    code, _, err = cli(argv, monkeypatch)
    line = error_line(code, err, "RAY_ADDRESS")
    assert line.startswith(f"error: RAY_ADDRESS=127.0.0.1:{bench.port}: no Ray cluster answers") and \
        "unset RAY_ADDRESS to start a local Ray" in line, line
    assert state(bench.lake) == before


@pytest.mark.parametrize("command", ["query", "tables", "search"])
def test_reading_a_lake_whose_store_does_not_answer(bench, monkeypatch, command):
    """An s3:// lake behind an endpoint where nothing answers (a store that is down, a wrong AWS_ENDPOINT_URL): the
    read commands say so in one line (no AWS_ALLOW_HTTP either: an http:// endpoint is taken as written)."""
    for k in ("AWS_ALLOW_HTTP", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{bench.port}", "AWS_REGION": "us-east-1",
                 "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(k, v)
    args = {"query": ["SELECT count(*) FROM explanations"], "tables": [], "search": ["a storm", "--keyword"]}[command]
    code, _, err = cli([command, *args, "--lake", "s3://nla-lake/down"], monkeypatch)
    line = error_line(code, err, command)
    assert line == ("error: lake s3://nla-lake/down: the store does not answer (endpoint unreachable). Fix: "
                    "check that the store (AWS_ENDPOINT_URL) is up and reachable from here, then run the command "
                    "again."), line
    report(f"nla {command} on an s3:// lake whose endpoint does not answer", f"exit 2, one line: {line}")


def alone_on_this_machine(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`nla ARGV` in a PID namespace of its own: Ray's `auto` looks for running clusters among the machine's
    processes, and the suite's other test clusters would be found. Skips where namespaces are refused."""
    probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"], capture_output=True) \
        if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("PID namespaces are refused here (no unshare, or no CAP_SYS_ADMIN)")
    return subprocess.run(["unshare", "-p", "-f", "--mount-proc", sys.executable, "-m", "nla.cli.main", *argv],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_ray_address_auto_with_no_ray_running(bench, tmp_path):
    """`auto` is Ray's own lookup (the last `ray start` here, else any running head): when it finds none, one line,
    exit 2, and no run recorded. Before: Ray's ConnectionError traceback, exit 1, after a failed run was recorded."""
    lake = tmp_path / "lake"  # a new lake: every shard to do, so the job must join Ray
    argv = shlex.split(fill_in(f"label input={{corpus}} --lake {lake} ray_address=auto", bench))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    (tmp_path / "ray").mkdir()
    p = alone_on_this_machine(argv, {**env, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": str(tmp_path / "ray")})
    line = error_line(p.returncode, p.stderr, "ray_address=auto")
    assert line.startswith("error: ray_address=auto: Ray found no cluster to join (") and \
        "Fix: start one here (`ray start --head`)" in line, line
    assert not lake.exists()  # no run recorded, nothing written
    report("nla label ray_address=auto with no Ray running on the machine",
           f"exit 2, one line: {line}; no lake written, no run recorded")


THROUGH_A_PROCESS = ("config typo in an override", "NaN vectors to explain", "serve a truncated AR")


def test_the_installed_cli_agrees(bench, monkeypatch):
    """A few cases through real `nla` processes (run side by side): the same single line on stderr, exit 2."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [(case, shlex.split(fill_in(args, bench))) for case, args, _ in CLI if case in THROUGH_A_PROCESS]
    before = {case: state(watched(argv, bench)) for case, argv in cases}
    with ThreadPoolExecutor(len(cases)) as pool:
        done = list(pool.map(nla_process, [argv for _, argv in cases]))
    for (case, argv), p in zip(cases, done):
        line = error_line(p.returncode, p.stderr, case)
        assert line == error_line(*cli(argv, monkeypatch)[::2], case), (case, line)
        assert state(watched(argv, bench)) == before[case]
    report(f"through real `nla` processes: {'; '.join(THROUGH_A_PROCESS)}",
           "each exited 2 with the very line the in-process run printed, nothing else on stderr, lake unchanged")


def test_nan_vectors_never_reach_a_table(bench):
    """The lake's last line of defence: a shard commit holding a NaN vector is refused whole."""
    import pyarrow as pa

    from nla.errors import NLASchemaError
    from nla.lake.query import LakeQuery
    from nla.lake.schema import vectors_to_arrow
    from nla.lake.store import Lake
    from nla.schemas import ACTIVATIONS

    lake = Lake(bench.lake)
    with LakeQuery(lake) as q:
        rows = q.run("SELECT * FROM activations WHERE shard LIKE 'part-0000.jsonl@%'", limit=None)
    assert rows.num_rows > 2, rows.num_rows
    shard = rows.column("shard")[0].as_py()  # the unit id, name@fingerprint
    vectors = np.asarray(rows.column("vector").to_pylist(), np.float32)  # (rows, d)
    vectors[2, 5] = np.nan
    bad = rows.set_column(rows.schema.get_field_index("vector"), "vector", vectors_to_arrow(vectors))
    before = state(bench.lake)
    with pytest.raises(NLASchemaError) as e:
        lake.commit_shard(ACTIVATIONS, pa.table(bad), shard=shard, run_id="nan-test")
    message = str(e.value)
    assert "NaN or inf" in message and rows.column("act_id")[2].as_py() in message and "Fix:" in message
    assert state(bench.lake) == before
    report("commit_shard of a shard whose third activation has one NaN component",
           f"NLASchemaError naming the table, the column and the act_id, with a fix; no row of the shard written "
           f"({message[:120]}...)")


# ---- the HTTP API ----------------------------------------------------------------------------------------------------
def b64(v) -> str:
    import base64

    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


V = [0.5] * 128
NAN_V = [0.5] * 64 + [float("nan")] + [0.5] * 63
HTTP = [  # (case, path, JSON body or raw bytes, status, words the message must hold)
    ("NaN in a base64 vector", "/v1/explain", {"vectors": [b64(NAN_V)]}, 400, ["vectors", "NaN or inf", "Fix"]),
    ("NaN in a search vector", "/v1/search", {"vector": b64(NAN_V), "k": 3}, 400, ["vector", "NaN or inf", "Fix"]),
    ("d mismatch: 64 floats for d=128", "/v1/score", {"explanations": ["weather"], "vectors": [[0.5] * 64]}, 400,
     ["vectors", "d_model=128", "Fix"]),
    ("non-UTF-8 text (an unpaired surrogate)", "/v1/extract", b'{"text": "caf\\udce9 au lait", "positions": [1]}',
     400, ["text", "not valid UTF-8", "Fix"]),
    ("a blank document", "/v1/explain", {"text": " \n\t ", "positions": [1]}, 400, ["text is empty", "Fix"]),
    ("a query of a misspelled table", "/v1/query", {"sql": "SELECT count(*) FROM explanation"}, 400,
     ["explanation", "Tables here", "Fix"]),
    ("a 10 MB document", "/v1/extract", {"text": "a heavy storm moved over oslo . " * (BIG_DOC_BYTES // 32),
                                          "positions": [1]}, 413, ["limit of", "Fix"]),
    ("a typo in a field name", "/v1/explain", {"vectors": [V], "max_new_token": 10}, 422, ["max_new_token", "Fix"]),
]


@pytest.mark.parametrize("case, path, body, status, words", HTTP, ids=[c[0] for c in HTTP])
def test_http_refuses(server, case, path, body, status, words):
    before = state(server.lake)
    got, answer = server.call(path, raw=body) if isinstance(body, bytes) else server.call(path, body)
    message = answer.get("error") or answer.get("raw", "")
    assert got == status and all(w in message for w in words) and "\n" not in message, (case, got, answer)
    assert state(server.lake) == before
    report(f"{case}: POST {path} ({len(body) if isinstance(body, bytes) else len(json.dumps(body))} bytes)",
           f"{got}, one line naming the input ({message[:140]}); lake unchanged")


# ---- bad documents in a corpus: labeled around, reported -------------------------------------------------------------
@dataclass
class Job:
    proc: subprocess.Popen
    lake: Path
    log: Path  # stdout; stderr beside it

    def result(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=600)
        return code, self.log.read_text(), self.log.with_suffix(".err").read_text()


@pytest.fixture(scope="module")
def bad_corpus_job(toy_kit, tmp_path_factory):
    """`nla label` on local Ray over a corpus of bad documents beside good ones, started in the background when the
    module starts (`bench` asks for it), so it runs while the refusals are checked."""
    root = tmp_path_factory.mktemp("bad-corpus")
    corpus, lake, log = root / "corpus", root / "lake", root / "job.out"
    corpus.mkdir()
    storm = "a heavy storm moved over oslo last night . the coach said the team will win . "
    big = (storm * (BIG_DOC_BYTES // len(storm) + 1))[:BIG_DOC_BYTES]
    doc = json.dumps({"id": "small-1", "text": storm * 3})
    (corpus / "big.jsonl").write_text(json.dumps({"id": "big", "text": big}) + "\n" + doc + "\n", encoding="utf-8")
    (corpus / "mixed.jsonl").write_bytes(
        json.dumps({"id": "small-2", "text": storm * 2}).encode() + b"\n"
        + b'{"id": "latin", "text": "caf\xe9 au lait"}\n'  # line 2: Latin-1, not UTF-8
        + b'{"id": "cut", "text": "a heavy sto\n'  # line 3: not JSON
        + b'{"id": "blank", "text": "   "}\n')  # line 4: an empty text
    (corpus / "latin1.txt").write_bytes("café au lait, crème brûlée".encode("latin-1"))
    (corpus / "corrupt.parquet").write_bytes(b"PAR1 corrupt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out, log.with_suffix(".err").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nla.cli.main", "label", f"input={corpus}", "--lake", str(lake),
                                 *JOB_ARGS], stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True)
    try:
        yield Job(proc, lake, log)
    finally:
        if proc.poll() is None:  # the test failed before waiting for it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_bad_documents_are_labeled_around_and_reported(bad_corpus_job):
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake

    code, out, err = bad_corpus_job.result()
    lake = bad_corpus_job.lake
    assert code == 0, out[-3000:] + err[-3000:]
    with LakeQuery(Lake(lake)) as q:
        docs = q.run("SELECT doc_id, count(*) n, max(position) last, max(length(context)) ctx FROM activations "
                     "GROUP BY doc_id ORDER BY doc_id", limit=None).to_pylist()
        expl = q.run("SELECT count(*) n FROM explanations").column("n")[0].as_py()
        counts = json.loads(q.run("SELECT counts FROM runs WHERE job = 'label'").column("counts")[0].as_py())
    by_doc = {r["doc_id"]: r for r in docs}
    assert set(by_doc) == {"big", "small-1", "small-2"}, docs  # no row for any bad document
    assert expl == sum(r["n"] for r in docs)
    # the 10 MB document: labeled like any other, cut to extract.max_length = 1024 tokens
    assert by_doc["big"]["n"] == 6 and by_doc["big"]["last"] < 1024 and by_doc["big"]["ctx"] <= 400, by_doc["big"]
    report("a 10 MB document (10,485,760 characters, one jsonl line) in a labeling run on local Ray",
           f"labeled: {by_doc['big']['n']} activations, all at positions < 1024 (cut to extract.max_length; last "
           f"{by_doc['big']['last']}), context <= 400 chars; exit 0")
    bad = {("mixed.jsonl@", "mixed.jsonl:2: line 2: not UTF-8 text"): "a Latin-1 line in a jsonl shard",
           ("mixed.jsonl@", "mixed.jsonl:3: line 3: not JSON"): "a cut-off JSON line",
           ("mixed.jsonl@", "blank: empty document"): "a blank text",
           ("latin1.txt@", "latin1.txt: not UTF-8 text (byte 3)"): "a Latin-1 .txt shard"}
    lines = [ln for ln in out.splitlines() if ln.startswith("  bad document ")]
    for shard, words in bad:  # the shard's unit id (name@fingerprint), then the file and line a person can open
        assert any(ln.startswith(f"  bad document {shard}") and f" {words}" in ln for ln in lines), (words, lines)
    assert counts["bad_documents"] == 4 and counts["shards_failed"] == 1, counts
    report(f"bad documents beside good ones: {', '.join(bad.values())}",
           "each named in the summary by shard and line with the reason, counted in the runs row (bad_documents 4), "
           "no row written for any; the good documents of the same shards labeled")
    skipped = next(ln for ln in out.splitlines() if "skipped shard corrupt.parquet" in ln)
    assert "unreadable" in skipped and "Fix: re-export the file" in skipped, skipped
    report("a corrupt parquet shard (b'PAR1 corrupt') in the same run",
           f"skipped with its reason and fix ({skipped.strip()[:120]}); shards_failed 1, the other shards committed")
