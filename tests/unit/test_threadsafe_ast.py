"""ast.parse from several threads at once (what Python 3.11's traceback formatting does when
Prefect's task threads log) never raises the interpreter's "AST constructor recursion depth
mismatch" SystemError once recast is imported.

The race needs a thread switch in the middle of the C conversion: a garbage collection running
a ``__del__`` that sleeps gives one. Without recast's lock this loop raised the SystemError 1-3
times in 3 s on Python 3.11.7 here."""

import ast
import gc
import sys
import threading
import time

import pytest

import recast  # noqa: F401 - installs the lock


class _SwitchesThreads:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it, from inside whatever runs then

    def __del__(self) -> None:
        time.sleep(0.0002)


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the AST conversion is thread-safe from Python 3.13")
def test_parsing_from_several_threads_while_the_collector_switches_threads_does_not_fail():
    source = "\n".join("x = " + "(" * 20 + "a + b" + ")" * 20 for _ in range(20))
    stop = threading.Event()
    errors: list[BaseException] = []
    parses = [0]

    def garbage() -> None:
        while not stop.is_set():
            _SwitchesThreads()
            time.sleep(0.0005)

    def parse_until(deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                ast.parse(source)
                parses[0] += 1
            except SystemError as exc:
                errors.append(exc)

    thresholds = gc.get_threshold()
    gc.set_threshold(100, 1, 1)
    try:
        g = threading.Thread(target=garbage)
        g.start()
        deadline = time.monotonic() + 3.0
        workers = [threading.Thread(target=parse_until, args=(deadline,)) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        g.join()
    finally:
        gc.set_threshold(*thresholds)
    assert parses[0] > 100
    assert not errors, errors[:1]
