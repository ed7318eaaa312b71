"""Policy text is bounded before the TOML parser sees it: hostile shapes are a short PolicyError, never a crash.

The parser's cost is quadratic in the parts of a dotted key, it recurses once per nested array or
inline table, and it turns digits into integers without catching Python's digit limit. Each shape
below took seconds, gigabytes, a ``RecursionError`` or a ``ValueError`` before the bounds; each is
now refused, from a what-if request's text and from a file alike, with a message that names the line
and the bound and never repeats the value.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from downloads.adapters.policy_file import PolicyError, load_policy, policy_from_text
from downloads.adapters.policy_text import bound_broken
from downloads.domain import CatalogTitle

#: a dotted key of 5,000 parts: its nested value's repr recursed past Python's limit in the error message
DEEP = ".".join(["a"] * 5000)


def _file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "policy.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _readers(tmp_path: Path, text: str) -> list[Callable[[], object]]:
    """Both ways a policy is read: a what-if request's text, and a file (``serve`` and ``what-if --policy``)."""
    return [lambda: policy_from_text(text), lambda: load_policy(_file(tmp_path, text))]


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("[studios.s]\n" + ".".join(["a"] * 1000) + " = 1\n", "line 2: a key of more than 8 parts"),
        (f"[titles.t]\nstudio.{DEEP} = 1\n", "line 2: a key of more than 8 parts"),
        (f"[{DEEP}]\n", "line 1: a key of more than 8 parts"),
        ("[a.b.c.d.e.f.g.h.i]\n", "line 1: a key of more than 8 parts"),
        ('[titles]\n"a"."b".c.d.e.f.g.h.i = 1\n', "line 2: a key of more than 8 parts"),
        ("x = {a.b.c.d.e.f.g.h.i = 1}\n", "line 1: a key of more than 8 parts"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "line 1: arrays and inline tables nested more than 8 deep"),
        ("a = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "line 1: arrays and inline tables nested more than 8 deep"),
        ("a = [[[[[[[[[1]]]]]]]]]\n", "line 1: arrays and inline tables nested more than 8 deep"),
        ("[devices]\nmax_active_downloads = " + "1" * 5000 + "\n", "line 2: longer than 4,096 characters"),
        ("# " + "x" * 5000 + "\n", "line 1: longer than 4,096 characters"),
    ],
)
def test_a_hostile_shape_is_refused_naming_the_line_and_the_bound(tmp_path: Path, text: str, refusal: str) -> None:
    for read in _readers(tmp_path, text):
        with pytest.raises(PolicyError) as refused:
            read()
        assert refusal in str(refused.value)
        assert len(str(refused.value)) < 300


def test_the_issue_s_32_kb_dotted_key_is_refused_before_it_is_parsed() -> None:
    # 16,300 parts: about 6 s of CPU and 700 MB in the TOML parser before the bound
    text = "[studios.s]\n" + ".".join(["a"] * 16_300) + " = 1\n"
    assert 32_000 < len(text) <= 32_768

    with pytest.raises(PolicyError, match="line 2: a key of more than 8 parts"):
        policy_from_text(text)


def test_a_file_over_one_mebibyte_is_refused_without_being_parsed(tmp_path: Path) -> None:
    line = "# a comment, which alone would parse to the default policy\n"
    text = line * (1024 * 1024 // len(line) + 1)
    assert len(text) > 1024 * 1024

    with pytest.raises(PolicyError, match=r"larger than 1,048,576 bytes"):
        load_policy(_file(tmp_path, text))
    with pytest.raises(PolicyError, match=r"larger than 1,048,576 bytes"):
        policy_from_text(text)


def test_a_catalog_of_many_titles_under_a_mebibyte_is_read(tmp_path: Path) -> None:
    titles = "".join(f'[titles."film-{n:05d}"]\nstudio = "restricted"\n' for n in range(20_000))
    text = '[studios.default]\nlicense_duration = "30d"\n[studios.restricted]\nmax_downloads_per_title = 3\n' + titles
    assert 512 * 1024 < len(text.encode()) < 1024 * 1024

    policy = load_policy(_file(tmp_path, text))

    assert len(policy.titles) == 20_000
    assert policy.titles["film-19999"] == CatalogTitle("restricted")


def test_dots_and_brackets_inside_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    text = (
        "# a.b.c.d.e.f.g.h.i.j.k [[[[[[[[[[ {{{{{{{{{{\n"
        '[titles."film.with.a.b.c.d.e.f.g.h.dots"]  # ids may hold dots: a.b.c.d.e.f.g.h.i\n'
        "studio = 'default'\n"
        "[titles.'x[[[[[[[[[[y{{{{{{{{{{.a.b.c.d.e.f.g.h']\n"
        'studio = """default"""\n'
        '[titles."quote\\".a.b.c.d.e.f.g.h.i"]\n'
        "studio = '''default'''\n"
        "[studios.default]\n"
        'license_duration = """30d"""\n'
        "[studios.restricted]\n"
    )
    for read in _readers(tmp_path, text):
        policy = read()
        assert set(policy.titles) == {  # type: ignore[attr-defined]
            "film.with.a.b.c.d.e.f.g.h.dots",
            "x[[[[[[[[[[y{{{{{{{{{{.a.b.c.d.e.f.g.h",
            'quote".a.b.c.d.e.f.g.h.i',
        }


def test_the_deepest_keys_and_nesting_within_the_bounds_reach_the_policy_s_own_checks(tmp_path: Path) -> None:
    at_the_bound = "[a.b.c.d.e.f.g.h]\ni.j.k.l.m.n.o.p = 1\nx = [[[[[[[[1]]]]]]]]\n"
    for read in _readers(tmp_path, at_the_bound):
        with pytest.raises(PolicyError, match=r"^policy\.a: unknown key"):
            read()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('[devices]\nmax_active_downloads = "' + "x" * 3000 + '"\n', "devices.max_active_downloads: expected"),
        ("[devices]\nmax_active_downloads = {a = {b = {c = 1}}}\n", "got a table"),
        ("[devices]\nmax_active_downloads = [1, 2]\n", "got an array"),
        ('[titles.t]\nstudio = "' + "s" * 3000 + '"\n', "titles.t.studio: unknown studio"),
        ("[studios]\n" + "n" * 3000 + " = 1\n", "studios.nnnn"),
        ("[plans.basic]\n" + "k" * 3000 + " = 1\n", "plans.basic.kkkk"),
    ],
)
def test_an_error_message_never_repeats_a_long_or_nested_value(tmp_path: Path, text: str, shown: str) -> None:
    for read in _readers(tmp_path, text):
        with pytest.raises(PolicyError) as refused:
            read()
        message = str(refused.value)
        assert shown in message
        assert len(message) < 300, message
        assert "{" not in message and "'a'" not in message


def test_a_file_that_is_not_utf_8_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(_file(tmp_path, b"[plans.basic]\ndownload_devices = 1 # \xff\xfe\n"))


# -- the scan reads strings and comments as TOML does -------------------------------------------
#
# Generated documents, valid TOML (the parser checks), whose keys, strings and comments are full of
# dots, quotes, brackets and escapes: within the bounds the scan finds nothing, and one key of nine
# parts added anywhere is found on its own line. A scan that took a string's end for another place
# would count dots or brackets inside strings, or miss the added key.

TRICKY = st.text(alphabet=st.sampled_from(list("ab.[]{}#='\"\\ ,-_")), max_size=12)
BARE = st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True)


def _basic(text: str) -> str:
    return json.dumps(text)


@st.composite
def _strings(draw: st.DrawFn) -> str:
    text = draw(TRICKY)
    forms = [_basic(text), '"""' + text.replace("\\", "\\\\").replace('"', '\\"') + '"""']
    if "'" not in text:
        forms += ["'" + text + "'", "'''" + text + "'''"]
    return draw(st.sampled_from(forms))


@st.composite
def _keys(draw: st.DrawFn, *, most: int) -> str:
    parts = draw(st.lists(st.one_of(BARE, TRICKY.map(_basic)), min_size=1, max_size=most))
    return draw(st.sampled_from([".", " . "])).join(parts)


def _values(depth: int) -> st.SearchStrategy[str]:
    scalars = st.one_of(_strings(), st.integers(-999, 999).map(str), st.sampled_from(["1.5", "true", "1979-05-27"]))
    if depth == 0:
        return scalars
    inner = _values(depth - 1)
    arrays = st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    tables = st.lists(st.tuples(_keys(most=3), inner), max_size=3, unique_by=lambda kv: kv[0].split(".")[0]).map(
        lambda pairs: "{" + ", ".join(f"{k} = {v}" for k, v in pairs) + "}"
    )
    return st.one_of(scalars, arrays, tables)


@st.composite
def _documents(draw: st.DrawFn) -> list[str]:
    lines = []
    for n in range(draw(st.integers(1, 4))):
        lines.append(f"[t{n}.{draw(_keys(most=6))}]  # {draw(TRICKY).replace(chr(10), '')}")
        lines.append(f"k = {draw(_values(draw(st.integers(0, 4))))}")
        lines.append(f"d.{draw(_keys(most=6))} = {draw(_strings())}")
    return lines


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents(), st.data())
def test_the_scan_agrees_with_the_parser_on_strings_and_comments(lines: list[str], data: st.DataObject) -> None:
    text = "\n".join(lines) + "\n"
    assume(_parses(text))
    assert bound_broken(text) is None

    where = data.draw(st.integers(0, len(lines)))
    table = data.draw(st.sampled_from(["", "[x9]\n"]))
    nine = table + ".".join(f"p{n}" for n in range(9)) + " = 1"
    longer = "\n".join([*lines[:where], nine, *lines[where:]]) + "\n"
    assert _parses(longer)
    assert bound_broken(longer) == f"line {where + 1 + table.count(chr(10))}: a key of more than 8 parts"


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True
