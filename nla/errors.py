"""Typed exceptions for every user-facing failure in nla.

Each message names the input (file, key, argument), says what is wrong and what to do. The CLI prints the message
alone (no traceback) and exits 2. This module holds no logic beyond the classes.
"""

from __future__ import annotations


class NLAError(Exception):
    """Base class: every error nla raises on bad input derives from this."""


class NLAConfigError(NLAError):
    """A sidecar (nla_meta.yaml) or a config is missing, malformed or inconsistent with the live tokenizer."""


class NLACheckpointError(NLAError):
    """A checkpoint folder lacks a file the release layout requires, or a file is unreadable."""


class NLAInputError(NLAError):
    """A vector, text or prompt handed to the API cannot be used (wrong d, NaN/inf, empty, no <INJECT>, ...)."""


class NLALakeError(NLAError):
    """A lake operation failed: the message says which table and what to do."""


class NLATableNotFound(NLALakeError):
    """The table does not exist under the lake root."""


class NLASchemaError(NLALakeError):
    """Rows do not match the table's declared schema (schemas/): missing, extra or mistyped columns, wrong d."""


class NLAStoreUnreachable(NLALakeError):
    """The object store behind a lake did not answer for longer than the lake waits (NLA_STORE_WAIT_S)."""


class NLACommitConflict(NLALakeError):
    """Delta refused a commit because a concurrent writer changed the same data; retrying is safe."""


class NLAQueryError(NLALakeError):
    """A SQL query was refused (not read-only, touches files, unknown table/column) or failed or timed out."""
