"""``QuietTrimmer`` hands freed heap back once per busy spell, when the process has gone quiet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio

from app.assembly.heap import QuietTrimmer, glibc_malloc_trim, trim_heap_when_quiet


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def trimmer_with(clock: Clock) -> tuple[QuietTrimmer, list[int]]:
    calls: list[int] = []
    found: list[int] = []

    def find() -> object:
        found.append(1)
        return lambda: calls.append(1)

    trimmer = QuietTrimmer(find, clock)  # type: ignore[arg-type]
    return trimmer, calls


def test_no_trim_while_idle_nor_while_busy_and_one_when_a_busy_spell_ends():
    clock = Clock()
    trimmer, calls = trimmer_with(clock)
    for _ in range(3):  # idle since start-up: nothing was freed, nothing to do
        clock.now += 0.001
        trimmer.check(5.0)
    assert calls == []
    for _ in range(4):  # busy: half a core
        clock.now += 2.5
        trimmer.check(5.0)
    assert calls == []
    clock.now += 0.01  # quiet: the spell is over
    trimmer.check(5.0)
    assert calls == [1]
    for _ in range(3):  # still quiet: once per spell
        clock.now += 0.01
        trimmer.check(5.0)
    assert calls == [1] and trimmer.trims == 1
    clock.now += 1.0  # another busy interval, then quiet
    trimmer.check(5.0)
    clock.now += 0.0
    trimmer.check(5.0)
    assert trimmer.trims == 2


def test_without_malloc_trim_nothing_is_looked_up_twice():
    clock = Clock()
    looked: list[int] = []

    def none() -> None:
        looked.append(1)

    trimmer = QuietTrimmer(none, clock)
    for _ in range(3):
        clock.now += 5.0
        trimmer.check(5.0)
        trimmer.check(5.0)
    assert looked == [1] and trimmer.trims == 0


def test_glibc_malloc_trim_runs_here():
    assert sys.platform.startswith("linux")  # where the gateway runs (the image is Debian's glibc)
    trim = glibc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: none could be


def test_the_lifespan_task_checks_on_its_interval_and_stops_with_it():
    clock = Clock()
    trimmer, calls = trimmer_with(clock)
    clock.now = 1.0  # busy since the trimmer was made

    async def main() -> None:
        async with trim_heap_when_quiet(trimmer, every=0.02):
            for _ in range(200):  # the first check sees the busy second, a later one the quiet: one trim
                if trimmer.trims:
                    break
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        clock.now += 1.0  # would make the next check busy, then trim again, were it still running
        await anyio.sleep(0.1)

    anyio.run(main)
    assert calls == [1]


# Runs in a fresh interpreter: glibc's sliding thresholds depend on what the process freed before.
# Prints the bytes a 2 MiB buffer adds to the mmapped ones, then the heap's size while 16 MiB of
# 256 KiB pieces (uvloop's read size) live and after they are freed.
HEAP_PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    from app.assembly.heap import keep_freed_heap
    print(keep_freed_heap())
before = libc.mallinfo2().hblkhd
big = bytearray(2 << 20)
mmapped = libc.mallinfo2().hblkhd - before
del big
pieces = [bytearray(256_000) for _ in range(64)]
held = libc.mallinfo2().arena
del pieces
print(mmapped, held, libc.mallinfo2().arena)
"""


def probe_heap(mode: str, **env: str) -> tuple[int, int, int]:
    root = Path(__file__).resolve().parents[2]
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE, mode],
        cwd=root,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    mmapped, held, after = map(int, done.stdout.split()[-3:])
    return mmapped, held, after


def test_freed_buffers_stay_in_the_heap_while_busy_so_they_are_not_faulted_in_again():
    assert sys.platform.startswith("linux")  # glibc, as in the image
    # glibc by default: a 2 MiB buffer is a fresh mmap, and freed 256 KiB pieces go back to the OS
    # (mapped anew, page by page, for the next response's body).
    mmapped, held, after = probe_heap("default")
    assert mmapped >= 2 << 20
    assert after < held - (8 << 20) or held < 8 << 20  # trimmed, or never in the heap (mmapped)
    mmapped, held, after = probe_heap("keep")
    assert mmapped == 0
    assert held >= 16 << 20 and after >= held - (1 << 20)  # kept for the next responses


def test_a_malloc_threshold_set_in_the_environment_is_left_as_it_is():
    # The README's knob for a deployment that prefers RSS to CPU after large bodies.
    for env in ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}):
        mmapped, held, after = probe_heap("keep", **env)
        assert after < held - (8 << 20) or held < 8 << 20, env  # trimmed as the environment says
