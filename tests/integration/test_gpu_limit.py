"""The "gpu" global concurrency limit on a real (temporary) Prefect server: `recast deploy` sizes it
to the machine's GPUs, and swap chunks of a learned engine then hold a GPU no more than that many
at a time, while the classic engine's chunks wait for nothing."""

from __future__ import annotations

import threading
import time

import pytest

HOLD_S = 0.4


@pytest.fixture()
def gpus(prefect_server, monkeypatch):
    """Set how many GPUs `recast deploy` sees here, and (re)create the limit as it does."""
    from recast.flows import deployments

    def deploy_with(count: int) -> int:
        monkeypatch.setattr(deployments, "gpu_count", lambda: count)
        return deployments.ensure_gpu_concurrency_limit()

    return deploy_with


def most_at_once(backend: str, chunks: int) -> int:
    """Run ``chunks`` swap-chunk GPU slots of ``backend`` in parallel threads, each holding its
    slot for HOLD_S; the largest number that held one at the same moment."""
    from recast.tasks.swap import _gpu_slot

    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def chunk() -> None:
        try:
            with _gpu_slot(backend):
                start = time.monotonic()
                time.sleep(HOLD_S)
                end = time.monotonic()
            with lock:
                spans.append((start, end))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=chunk) for _ in range(chunks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(spans) == chunks
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


@pytest.mark.slow
def test_one_gpu_runs_learned_swap_chunks_one_at_a_time(gpus):
    assert gpus(1) == 1
    assert most_at_once("inswapper", 3) == 1


def test_a_machine_without_gpus_still_gets_one_slot_not_zero(gpus):
    # a limit of 0 would block every GPU chunk queued from a CPU-only machine forever
    assert gpus(0) == 1
    assert most_at_once("inswapper", 2) == 1


def test_two_gpus_run_two_chunks_at_once_and_the_classic_engine_needs_no_slot(gpus):
    from prefect.client.orchestration import get_client

    gpus(1)
    assert gpus(2) == 2  # running `recast deploy` again on a bigger machine updates the limit
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("gpu").limit == 2
    assert most_at_once("inswapper", 3) == 2

    gpus(1)
    assert most_at_once("classic", 3) == 3
