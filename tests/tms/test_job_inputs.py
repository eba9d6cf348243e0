"""What a backend can start: sizes, names, URLs, and the ClassAd requirements combiner."""

from __future__ import annotations

from typing import Any

import classad2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tms.job_inputs import (
    DISK_BARE_UNIT,
    MEMORY_BARE_UNIT,
    BadInput,
    check_env_name,
    check_input_file,
    check_submit_text,
    combine_requirements,
    parse_requirements,
    parse_size,
)

ATTRS = ("Memory", "Cpus", "HasAVX", "Arch", "x", "TARGET.Memory", "MY.Cpus", "TARGET.HasAVX")
SITES = ("HasSingularity", 'Arch == "X86_64"', "Memory > 1024 || HasAVX", "false", "x =?= undefined")


def _leaf() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ATTRS),
        st.integers(-5, 5000).map(str),
        st.sampled_from(("true", "false", "undefined", "error", '"X86_64"', '"a b"', '"q\\"t"')),
    )


def _expr() -> st.SearchStrategy[str]:
    ops = ("&&", "||", "==", "!=", "<", ">=", "=?=", "=!=", "+", "*")
    return st.recursive(
        _leaf(),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(ops), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            inner.map(lambda e: f"({e})"),
            inner.map(lambda e: f"!{e}"),
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
            st.tuples(inner, inner, inner).map(lambda t: f"ifThenElse({t[0]}, {t[1]}, {t[2]})"),
            inner.map(lambda e: f"isUndefined({e})"),
        ),
        max_leaves=8,
    )


# fragments an attacker would splice together, including the ones that once escaped
_SOUP = st.lists(
    st.sampled_from(
        (
            "false",
            "true",
            ")",
            "(",
            " || ",
            " && ",
            "]",
            "[",
            ";",
            " x = 1",
            "Memory",
            " > 3",
            '"',
            "//",
            "{",
            "}",
            ",",
        )
    ),
    max_size=12,
).map("".join)

_VALUE = st.one_of(st.integers(-5, 5000), st.booleans(), st.sampled_from(("X86_64", "a b", "")))


@st.composite
def _ad(draw: Any) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    for name in ("Memory", "Cpus", "HasAVX", "Arch", "x", "HasSingularity"):
        if draw(st.booleans()):
            ad[name] = draw(_VALUE)
    return ad


def _truth(expr: str, ad: classad2.ClassAd) -> Any:
    """True/False as ClassAd's && reads a value (a non-zero number is true), else undefined or error."""
    return classad2.ClassAd(f"[e = ifThenElse(({expr}), true, false)]").lookup("e").eval(ad, ad)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    site=st.sampled_from(SITES), user=st.one_of(_expr(), _SOUP), ads=st.lists(_ad(), min_size=1, max_size=4)
)
def test_combined_requirements_are_site_and_user(site: str, user: str, ads: list[classad2.ClassAd]) -> None:
    """For any user text that parses, the combination is `(site) && (user)` as a tree: it is
    true only where both are, and false wherever the site part is false."""
    try:
        canonical = parse_requirements(user, "f")
    except BadInput:
        if not user.strip():
            return
        with pytest.raises(BadInput):
            combine_requirements(site, user)
        return
    combined = combine_requirements(site, user)
    assert combined == f"({parse_requirements(site, 's')}) && ({canonical})"
    for ad in ads:
        site_v, user_v, both = _truth(site, ad), _truth(canonical, ad), _truth(combined, ad)
        if site_v is False:
            assert both is False
        assert (both is True) == (site_v is True and user_v is True), (combined, ad)


@pytest.mark.parametrize(
    "text",
    [
        "false) || (true",  # the finding: closes the site's parenthesis
        "true] [x = 1",  # classad2.ExprTree alone drops what follows the ad
        "true; Requirements = true",  # ...and a second attribute
        "(true",
        "true // comment",
        "",
        'Name == "$ENV(EWMS_TMS_TOKEN)"',  # would expand in the submit description
        "true\n+Evil = 1",
    ],
)
def test_injected_or_broken_requirements_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="condor_requirements"):
        parse_requirements(text, "condor_requirements")


def test_requirements_are_rendered_on_one_line() -> None:
    assert parse_requirements("HasAVX\n  && Memory > 2048", "f") == "HasAVX && Memory > 2048"
    assert parse_requirements('[a = 1; b = "x\\ny"].a > 0', "f") == '[a = 1;b = "x\\ny"].a > 0'
    assert combine_requirements("", "") == "" and combine_requirements("a", " ") == "a"


def test_sizes_read_as_htcondor_reads_them() -> None:
    def mem(v: object) -> int:
        return parse_size(v, bare_unit=MEMORY_BARE_UNIT, field="m")

    assert mem("512M") == mem("512MiB") == mem("512mb") == mem(512) == mem("512") == 512 << 20
    assert mem("1.5G") == 3 << 29 and mem("2T") == 2 << 40 and mem("100B") == 100
    assert parse_size("10", bare_unit=DISK_BARE_UNIT, field="d") == 10 << 10
    # a JSON integer, as EWMS's clients send it, means what the bare number means
    assert parse_size(10, bare_unit=DISK_BARE_UNIT, field="d") == parse_size(
        "10", bare_unit=DISK_BARE_UNIT, field="d"
    )
    with pytest.raises(BadInput, match="m: not a size"):
        mem("lots")


def test_environment_names() -> None:
    check_env_name("EWMS_PILOT_PREFETCH", "f", portable=True)
    check_env_name("my-var.x", "f", portable=False)
    for name in ("A=B", "", "A\0"):
        with pytest.raises(BadInput, match="empty or holds"):
            check_env_name(name, "f", portable=False)
    for name in ("A B", "1A", "A-B", 'A"'):
        with pytest.raises(BadInput, match="must match"):
            check_env_name(name, "f", portable=True)


def test_submit_text() -> None:
    check_submit_text("cost 5$ and $HOME, x$", "f")
    for text, message in (
        ("$(Cluster)", "macro"),
        ("$ENV(HOME)", "macro"),
        ("$$(Memory)", "macro"),
        ("a\rb", "line break"),
        ("a\0", "NUL"),
    ):
        with pytest.raises(BadInput, match=message):
            check_submit_text(text, "f")


def test_input_files_are_urls_of_allowed_schemes() -> None:
    schemes = {"https", "osdf"}
    check_input_file("https://example.org/data.tar.gz", "f", schemes)
    check_input_file("osdf:///ospool/ap40/data/x", "f", schemes)
    check_input_file("s3://bucket/x", "f", None)  # the TMS: any scheme but file
    for url, message in (
        ("/home/tms/jobs/TF-other/pilot-queue-auth.json", "not a URL"),
        ("../TF-other/pilot-queue-auth.json", "not a URL"),
        ("file:///etc/passwd", "not allowed"),
        ("http://example.org/x", "not allowed"),
        ("https://example.org/a,/etc/passwd", "comma"),
        ("https://example.org/a b", "whitespace"),
        ("https://example.org/$ENV(HOME)", "macro"),
    ):
        with pytest.raises(BadInput, match=message):
            check_input_file(url, "f", schemes)
    with pytest.raises(BadInput, match="not allowed"):
        check_input_file("FILE:///etc/passwd", "f", None)
