"""The runner's retained host memory (glibc): freed buffers stay for the next step.

Each check runs in a fresh interpreter, so that the threads and heaps that other tests leave
behind cannot move the resident-set figures it reads.
"""

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="retained host memory acts on glibc only",
)

BUFFER = 96 << 20  # above glibc's largest mmap threshold (32 MiB): mmapped by default
ROUNDS = 24

PROBE = f"""
import json
import torch
ROUNDS = {ROUNDS}
from mssbench.runners.host_memory import retained_host_memory

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def allocate_touch_free():
    before = resident()
    buf = torch.empty({BUFFER} // 4, dtype=torch.float32)
    buf.fill_(1.0)
    del buf
    return resident() - before

out = {{"plain": allocate_touch_free()}}
with retained_host_memory(enabled=False) as active:
    out["disabled_active"] = active
    out["disabled"] = allocate_touch_free()
with retained_host_memory() as active:
    out["active"] = active
    out["rounds"] = [allocate_touch_free() for _ in range(ROUNDS)]
    inside = resident()
out["returned"] = inside - resident()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_large_free_returns_memory_by_default(probe):
    assert probe["plain"] < BUFFER // 4


def test_freed_buffers_are_kept_and_reused_inside(probe):
    assert probe["active"]
    rounds = probe["rounds"]
    assert rounds[0] > BUFFER // 2, "a freed buffer was handed back to the system"
    # The heap settles after some rounds (an aligned request needs a little more than the hole
    # a freed buffer leaves, until holes merge: from none to six extra buffers, depending on
    # the heap's layout at the start); from then on nothing new is faulted in.
    settled = rounds[ROUNDS // 2 :]
    assert sum(settled) < BUFFER // 4, f"kept buffers are not reused: {rounds}"
    assert sum(rounds) < ROUNDS // 2 * BUFFER, f"the heap keeps growing: {rounds}"


def test_leaving_returns_the_kept_memory(probe):
    assert probe["returned"] > BUFFER // 2


def test_disabled_does_nothing(probe):
    assert not probe["disabled_active"]
    assert probe["disabled"] < BUFFER // 4
