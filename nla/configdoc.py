"""The config keys of the typed config dataclasses, with their types, defaults and the `# comment` on each field.

One source for `docs/configuration.md` (tools/gen_docs.py) and `nla label --help`, so neither can drift from the
dataclasses. Comments are read from the source with `ast` and `tokenize`: the comment on a field's line, plus any
comment-only lines right below it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import typing
from typing import Iterator


def _field_comments(cls: type) -> dict[str, str]:
    """field name -> its comment text, from the source of the class and of the dataclasses it extends."""
    out: dict[str, str] = {}
    for c in reversed(cls.__mro__):
        if dataclasses.is_dataclass(c):
            out.update(_own_comments(c))
    return out


def _own_comments(cls: type) -> dict[str, str]:
    """field name -> its comment text, from the class's own source."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    src = inspect.cleandoc(src) if src.startswith((" ", "\t")) else src
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    out: dict[str, str] = {}
    tree = ast.parse(src)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            parts = [comments[node.end_lineno]] if node.end_lineno in comments else []
            ln = node.end_lineno + 1
            while ln in comments and ln not in code_lines:  # comment-only continuation lines
                parts.append(comments[ln])
                ln += 1
            out[node.target.id] = " ".join(parts)
    return out


def _type_name(tp) -> str:
    if isinstance(tp, str):
        return tp
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def section_defaults(cls: type, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, comment) for every leaf field, nested sections flattened; the defaults are those of
    a default instance, so a section built by default_factory (read: num_cpus 0.25) shows its own."""
    yield from _walk(cls(), cls, prefix)


def _walk(obj, cls, prefix):
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from _walk(value, type(value), key + ".")
            continue
        yield key, _type_name(hints.get(f.name, f.type)), repr(value), comments.get(f.name, "")


def markdown_table(cls: type) -> str:
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for key, tp, default, comment in section_defaults(cls):
        cell = lambda s: s.replace("|", "\\|")
        rows.append(f"| `{key}` | `{cell(tp)}` | `{cell(default)}` | {cell(comment)} |")
    return "\n".join(rows) + "\n"


def help_text(cls: type, width: int = 110) -> str:
    """One line per key: `key=default  comment`, cut to width."""
    lines = []
    for key, _tp, default, comment in section_defaults(cls):
        head = f"  {key}={default}"
        line = f"{head:<36} {comment}" if comment else head
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return "\n".join(lines)
