"""nla: Natural Language Autoencoders as a library. `from nla import NLAClient, NLACritic`.

Model-side logic only (sidecars, injection, extraction, AV, AR, scores, training loops, the toy kit, the CLI);
Ray lives in jobs/ and serve/ (nla.jobs, nla.serve), never here.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from nla.errors import NLACheckpointError, NLAConfigError, NLAError, NLAInputError
from nla.meta import NLAMeta, TokenMeta

BESIDE = ("jobs", "serve", "schemas")  # folders beside nla/ in the repository: nla.jobs, nla.serve, nla.schemas


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Imports nla.jobs, nla.serve and nla.schemas from the folders beside nla/ when `nla` is a checkout's folder
    (a Ray job's working dir, the image's /app, the repository on sys.path): the names the wheel installs them as
    (pyproject.toml's package-dir). An installed nla has them inside and never adds this finder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.partition(".")
        init = self.root / name / "__init__.py"
        if parent != __name__ or name not in BESIDE or not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


_root = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "jobs").is_dir() and (_root / "jobs" / "__init__.py").is_file():
    sys.meta_path.insert(0, CheckoutFinder(_root))  # before an editable install of another checkout

__all__ = ["NLAClient", "NLACritic", "NLAMeta", "TokenMeta", "NLAError", "NLAConfigError", "NLACheckpointError",
           "NLAInputError"]


def __getattr__(name: str):  # heavy imports (torch, transformers) only when the API is used
    if name in ("NLAClient", "NLACritic"):
        from nla import client

        return getattr(client, name)
    raise AttributeError(name)
