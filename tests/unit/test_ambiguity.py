import pytest

from app.errors import AmbiguousPath
from app.proxy.ambiguity import PathReadings, decode_slashes, reads_one_way

READINGS = PathReadings(["/svc", "/svc/admin", "/api", "/Api2", "/"])
NONE: frozenset = frozenset()


def check(path: str, prefix: str, encoded_slashes: str = "reject", ignore: frozenset = NONE) -> str:
    return READINGS.check(path, prefix, encoded_slashes=encoded_slashes, ignore=ignore)


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/svc/admin\\x", "/svc"),
        ("/svc/admin;x=1/x", "/svc"),
        ("/api/..;/svc/admin", "/api"),
        ("/svc/..;/..;/x", "/svc"),  # climbs above the root
        ("/svc/ADMIN/x", "/svc"),
        ("/svc/admin./x", "/svc"),
        ("/svc/admin%20/x", "/svc"),
        ("/svc/admin.%20./x", "/svc"),
        ("/svc/...", "/svc"),  # Windows reads '...' as '..'
        ("/svc/%EF%BC%8E%EF%BC%8E/admin", "/svc"),  # fullwidth dots
        ("/svc/%EF%BD%81dmin/x", "/svc"),  # fullwidth 'a'
        ("/svc/admin%EF%BC%8Fx", "/svc"),  # fullwidth solidus
        ("/svc/%EF%BC%A1DMIN/x", "/svc"),  # fullwidth 'A', then case
        ("/svc/Admin;x.", "/svc"),  # three readings at once
        ("/x%3Ay/..;/svc/admin", "/"),
        ("/svc/admin%3Bx/y", "/svc"),  # decoded first, then ';' dropped
    ],
)
def test_a_reading_that_selects_another_route_or_climbs_out_is_refused(path, prefix):
    with pytest.raises(AmbiguousPath):
        check(path, prefix)


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/svc/admin/x", "/svc/admin"),
        ("/svc/Orders/x", "/svc"),
        ("/svc/a;v=1/x", "/svc"),
        ("/svc/x/..;/y", "/svc"),  # stays inside the route
        ("/svc/report.", "/svc"),
        ("/svc/caf%C3%A9", "/svc"),
        ("/Api2/x", "/Api2"),  # a prefix with capitals matches its own folded form
    ],
)
def test_a_path_with_one_reading_is_forwarded_as_it_is(path, prefix):
    assert check(path, prefix) == path


def test_encoded_slashes_by_mode():
    with pytest.raises(AmbiguousPath):
        check("/svc/files/a%2Fb", "/svc")
    assert check("/svc/files/a%2Fb", "/svc", "keep") == "/svc/files/a%2Fb"
    assert check("/svc/admin%2Fx", "/svc", "keep") == "/svc/admin%2Fx"  # the upstream treats it as data
    assert check("/svc/files/a%2Fb%5cc\\d", "/svc", "decode") == "/svc/files/a/b/c/d"
    with pytest.raises(AmbiguousPath):
        check("/svc/admin%2Fx", "/svc", "decode")


def test_keep_also_leaves_raw_backslashes_to_the_upstream():
    assert check("/svc/admin\\x", "/svc", "keep") == "/svc/admin\\x"


def test_ignored_readings_are_not_checked():
    assert check("/svc/ADMIN/x", "/svc", ignore=frozenset({"case"})) == "/svc/ADMIN/x"
    with pytest.raises(AmbiguousPath):
        check("/svc/admin;x/y", "/svc", ignore=frozenset({"case"}))  # ';' still read


def test_decode_slashes_merges_repeats():
    assert decode_slashes("/a%2F%2Fb\\\\c") == "/a/b/c"


@pytest.mark.parametrize(
    ("path", "plain"),
    [
        ("/demo/small.json", True),
        ("/", True),
        ("/a/b%2Fc", False),
        ("/a\\b", False),
        ("/a;b", False),
        ("/a/B", False),
        ("/a./b", False),
        ("/a.", False),
    ],
)
def test_only_paths_with_a_possible_second_reading_leave_the_fast_path(path, plain):
    assert reads_one_way(path) is plain
