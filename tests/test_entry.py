"""How a job's main() ends (jobs/entry.py): the exit code and the one line for each way a job stops."""

from __future__ import annotations

import pytest

from nla.jobs.entry import JobInterrupted, NothingDone, nla_message, run_main
from nla.errors import NLAInputError


class Wrapped(Exception):
    """What Ray raises on the driver: the worker's error as an object behind `cause`, or only as text."""

    def __init__(self, text: str, cause: BaseException | None = None) -> None:
        super().__init__(text)
        self.cause = cause


RAY_TEXT = """ray.exceptions.ActorDiedError: The actor died because of an error raised in its creation task.
Traceback (most recent call last):
  File "/work/nla/stages/explain.py", line 30, in __init__
    self.client = NLAClient(av)
nla.errors.NLAInputError: models.av: /x/av has no nla_meta.yaml.
Fix: point models.av at an AV folder (HF files + nla_meta.yaml)."""


def test_the_nla_error_behind_a_wrapper_is_found_as_object_or_text():
    err = NLAInputError("lake: /nope does not exist. Fix: create it")
    assert nla_message(err) == str(err)
    assert nla_message(Wrapped("worker failed", cause=err)) == str(err)
    try:
        try:
            raise err
        except NLAInputError as e:
            raise RuntimeError("task failed") from e
    except RuntimeError as chained:
        assert nla_message(chained) == str(err)
    # only text came back: the error's line, with its Fix: line when that came on a line of its own
    assert nla_message(Wrapped(RAY_TEXT)) == ("models.av: /x/av has no nla_meta.yaml. Fix: point models.av at an AV "
                                              "folder (HF files + nla_meta.yaml).")
    assert nla_message(RuntimeError("segfault in worker")) is None


def test_run_main_exit_codes_and_lines(capsys):
    def raising(e):
        def body():
            raise e
        return body

    assert run_main(lambda: None) == 0
    assert run_main(raising(JobInterrupted("interrupted: 2 shards committed, 6 left.", 130))) == 130
    assert capsys.readouterr().err == "interrupted: 2 shards committed, 6 left.\n"
    assert run_main(raising(NothingDone("nothing was labeled: every shard was empty"))) == 1
    assert capsys.readouterr().err == "error: nothing was labeled: every shard was empty\n"
    assert run_main(raising(Wrapped(RAY_TEXT))) == 2
    assert capsys.readouterr().err.startswith("error: models.av: /x/av has no nla_meta.yaml. Fix: point models.av")
    with pytest.raises(ZeroDivisionError):  # not the user's to fix: a traceback
        run_main(lambda: 1 / 0)
