"""Remember which checkpoint folders passed the sidecar-vs-tokenizer check, so a job's driver skips it next time.

Loading a tokenizer imports transformers' auto classes: 5-7 s of a job's start on a small machine, for a check whose
answer only changes when the folder, the libraries that load it or the checking code do. The stamp covers all three:
the folder's absolute path, the role, every file's name, size and mtime (ns), the installed transformers and
tokenizers versions, and the source of the modules that do the checking. A stamp that exists means "this exact folder
passed this exact check"; anything else runs the check again. Stamps live under $NLA_HOME/checked (default
~/.cache/nla); a cache that cannot be written only costs the time, never the check.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nla.bases import nla_home

_CHECKERS = ("client.py", "meta.py", "prompt.py", "hf.py", "checked.py")  # the code whose verdict a stamp records
_LOADERS = ("transformers", "tokenizers")  # they turn the folder's files into the tokenizer and config checked


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def stamp(folder: Path, role: str) -> str:
    h = hashlib.sha256(f"{folder.resolve()}\0{role}".encode())
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"\0{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    h.update("".join(f"\0{p}={_version(p)}" for p in _LOADERS).encode())
    here = Path(__file__).parent
    for name in _CHECKERS:
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _path(key: str) -> Path:
    return nla_home() / "checked" / key


def passed(key: str) -> bool:
    return _path(key).is_file()


def remember(key: str) -> None:
    try:
        p = _path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    except OSError:
        pass  # a read-only or full cache: the check simply runs every time
