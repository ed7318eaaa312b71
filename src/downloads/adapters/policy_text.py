"""Bounds on policy text, checked before the TOML parser sees it.

The standard library's parser spends time quadratic in the parts of one dotted key (16,300 parts,
32 KB: about 6 s and 700 MB), recurses once per nested array or inline table (a ``RecursionError``
some thousands deep), and converts integers of any length (past 4,300 digits Python raises a
``ValueError`` the parser lets through). A policy needs none of that: its deepest key has three
parts (``studios.default.license_duration``) and it holds no arrays. So before parsing, one pass
over the text, in linear time, checks:

* its size: at most :data:`MAX_POLICY_BYTES` (a request's what-if policy is far smaller: the API
  caps it at 32,768 characters);
* every line: at most :data:`MAX_LINE_CHARS` characters (this also bounds every key, string and number);
* every key (a table header's or a key/value's): at most :data:`MAX_KEY_PARTS` dotted parts;
* arrays and inline tables: nested at most :data:`MAX_NESTING` deep.

Text within these bounds parses in time and memory linear in its size. The pass reads strings and
comments as TOML does (so a dot or a bracket inside them counts for nothing); where the text stops
being TOML it may read on differently, which is harmless: the parser stops there too.
"""

from __future__ import annotations

import re

__all__ = ["MAX_KEY_PARTS", "MAX_LINE_CHARS", "MAX_NESTING", "MAX_POLICY_BYTES", "bound_broken"]

#: the largest policy read, in bytes of UTF-8 (a catalog of some 20,000 titles fits)
MAX_POLICY_BYTES = 1 << 20
#: the longest line, in characters
MAX_LINE_CHARS = 4096
#: the most parts one dotted key may have (a policy's deepest has 3)
MAX_KEY_PARTS = 8
#: the deepest arrays and inline tables may nest (a policy needs 2 at most)
MAX_NESTING = 8

#: what the pass acts on: string and comment openers, brackets, and what joins or ends a dotted key
_MARK = re.compile(r"[\"'#\[\]{}.=,\n]")
_BASIC_END = re.compile(r'[\\"\n]')  # in a one-line basic string: an escape, its end, or (invalid) a line break
_MULTILINE_BASIC_END = re.compile(r'[\\"]')
_LITERAL_END = re.compile(r"['\n]")


def bound_broken(text: str) -> str | None:
    """The first bound ``text`` breaks, said in a few words (``"line 2: a key of more than 8 parts"``), or None.

    Runs in time linear in ``len(text)`` and keeps nothing of it.
    """
    if len(text) > MAX_POLICY_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        return f"larger than {MAX_POLICY_BYTES:,} bytes"
    parts, depth, pos = 1, 0, 0
    while (mark := _MARK.search(text, pos)) is not None:
        char, at = mark.group(), mark.start()
        pos = at + 1
        if char == ".":
            parts += 1
            if parts > MAX_KEY_PARTS:
                return f"line {_line(text, at)}: a key of more than {MAX_KEY_PARTS} parts"
        elif char in "[{":
            parts, depth = 1, depth + 1
            if depth > MAX_NESTING:
                return f"line {_line(text, at)}: arrays and inline tables nested more than {MAX_NESTING} deep"
        elif char in "]}":
            parts, depth = 1, max(0, depth - 1)
        elif char in "=,\n":
            parts = 1
        elif char == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end  # the line break is read next: it ends a key
        else:
            pos = _after_string(text, at)
    if max(map(len, text.split("\n"))) > MAX_LINE_CHARS:
        number = next(n for n, line in enumerate(text.split("\n"), 1) if len(line) > MAX_LINE_CHARS)
        return f"line {number}: longer than {MAX_LINE_CHARS:,} characters"
    return None


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def _after_string(text: str, at: int) -> int:
    """Where the string that opens at ``at`` ends (just past its closing quotes), as TOML reads strings."""
    quote = text[at]
    triple = text.startswith(quote * 3, at)
    pos = at + (3 if triple else 1)
    if quote == "'":
        if triple:
            end = text.find("'''", pos)
            return len(text) if end < 0 else _past_quotes(text, end, "'")
        found = _LITERAL_END.search(text, pos)
        if found is None:
            return len(text)
        return found.end() if found.group() == "'" else found.start()
    pattern = _MULTILINE_BASIC_END if triple else _BASIC_END
    while (found := pattern.search(text, pos)) is not None:
        char, end = found.group(), found.start()
        if char == "\\":
            pos = end + 2  # the escaped character, whatever it is, is the string's
        elif char == "\n":
            return end  # a one-line string cannot hold a line break: the parser stops here
        elif not triple:
            return end + 1
        elif text.startswith('"""', end):
            return _past_quotes(text, end, '"')
        else:
            pos = end + 1  # one or two quotes inside a multi-line string
    return len(text)


def _past_quotes(text: str, end: int, quote: str) -> int:
    """Past a closing triple quote at ``end``: TOML lets up to two more quotes belong to the string."""
    pos = end + 3
    for _ in range(2):
        if text.startswith(quote, pos):
            pos += 1
    return pos
