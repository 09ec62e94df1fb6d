"""A small reader of C function declarations, enums and integer #defines.

It understands exactly the subset the library's header uses (``csrc/api/quanto_kernels.h``, see
docs/architecture.md): functions whose parameters are scalars (``int32_t``, ``int64_t``) or pointers
(``void*``, ``const void*``, ``int32_t*``, ``int64_t*``, ``const char*``), optionally prefixed by the
export macro ``QK_API``; anonymous ``enum { NAME = value, ... }`` blocks; ``#define NAME <int>``.
Anything it does not understand inside a declaration raises ValueError, so a header change that
this reader would misread fails loudly instead of silently.

It serves two purposes: ``abi.py`` turns its own declaration table into ctypes signatures with it,
and the tests read the header with it and compare the two (names, order, types).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_FUNCTION = re.compile(
    r"(?:\bQK_API\s+)?(?P<ret>(?:const\s+)?[A-Za-z_]\w*(?:\s*\*)*)\s*\b(?P<name>qk_\w+)\s*\((?P<params>[^()]*)\)\s*;"
)
_PARAM = re.compile(r"^(?P<type>(?:const\s+)?[A-Za-z_]\w*(?:\s*\*)*)\s*\b(?P<name>[A-Za-z_]\w*)$")
_ENUM = re.compile(r"\benum\s*(?:\w+\s*)?\{(?P<body>[^}]*)\}")
_DEFINE = re.compile(r"^\s*#\s*define\s+(?P<name>[A-Za-z_]\w*)\s+(?P<value>-?\d+)\s*$", re.M)


@dataclass(frozen=True)
class Param:
    ctype: str  # normalised: "const void*", "int64_t", "int32_t*", ...
    name: str


@dataclass(frozen=True)
class Function:
    name: str
    restype: str
    params: Tuple[Param, ...]


def normalise_type(text: str) -> str:
    """'const  void *' -> 'const void*'."""
    stars = text.count("*")
    base = " ".join(text.replace("*", " ").split())
    return base + "*" * stars


def strip_comments(text: str) -> str:
    return _COMMENT.sub(" ", text)


def parse_functions(text: str) -> List[Function]:
    """Every ``qk_*`` function declaration in `text`, in order of appearance."""
    out = []
    for match in _FUNCTION.finditer(strip_comments(text)):
        raw = " ".join(match.group("params").split())
        params = []
        if raw not in ("", "void"):
            for piece in raw.split(","):
                piece = piece.strip()
                pm = _PARAM.match(piece)
                if pm is None:
                    raise ValueError(f"{match.group('name')}: cannot read parameter {piece!r}")
                params.append(Param(normalise_type(pm.group("type")), pm.group("name")))
        out.append(Function(match.group("name"), normalise_type(match.group("ret")), tuple(params)))
    return out


def parse_constants(text: str) -> Dict[str, int]:
    """Integer #defines and enum members (implicit values count up from the previous one)."""
    text = strip_comments(text)
    found: Dict[str, int] = {}
    for m in _DEFINE.finditer(text):
        found[m.group("name")] = int(m.group("value"))
    for m in _ENUM.finditer(text):
        value = -1
        for item in m.group("body").split(","):
            item = item.strip()
            if not item:
                continue
            name, eq, expr = (s.strip() for s in item.partition("="))
            value = int(expr, 0) if eq else value + 1
            found[name] = value
    return found
