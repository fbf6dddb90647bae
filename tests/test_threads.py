"""Thread choice: explicit setting, OMP_NUM_THREADS, affinity and cgroup quota, DataLoader workers."""
import pytest
import torch

from hpa import threads
from hpa.errors import HPAError


def test_cgroup_quota_files(tmp_path):
    v2 = tmp_path / "cpu.max"
    v1 = tmp_path / "v1" / "cpu.cfs_quota_us"
    v1.parent.mkdir()
    assert threads.cgroup_cpu_quota(v2, v1) is None                      # no files: unlimited
    v2.write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(v2, v1) is None
    v2.write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(v2, v1) == 1.5
    v2.unlink()
    v1.write_text("-1\n")
    (v1.parent / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(v2, v1) is None
    v1.write_text("300000\n")
    assert threads.cgroup_cpu_quota(v2, v1) == 3.0


def test_choose_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "system_load", lambda: 0.3)
    assert threads.choose_threads(3, 2) == (3, "set by train.threads")
    assert threads.choose_threads(0, 2)[0] == 6                           # 8 CPUs - 2 workers
    assert threads.choose_threads(0, 20)[0] == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.choose_threads(0, 1)[0] == 3                           # 8 / 2 processes - 1 worker
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 2.5)         # quota 2.5 CPUs -> 3
    n, why = threads.choose_threads(0, 0)
    assert n == 3 and "cgroup quota 2.5" in why
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "system_load", lambda: 5.4)              # 2.6 of 8 CPUs idle -> 3
    assert threads.choose_threads(0, 0) == (3, "auto: 8 CPUs in the affinity mask, 0 DataLoader "
                                               "workers, load 5.4 leaves 2.6 idle")
    monkeypatch.setattr(threads, "system_load", lambda: 12.0)             # overloaded: still 1
    assert threads.choose_threads(0, 0)[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads(0, 0) == (1, "auto: OMP_NUM_THREADS=1")
    with pytest.raises(HPAError, match="train.threads: must be 0"):
        threads.choose_threads(-1)


def test_set_threads_sets_torch_and_says_so(monkeypatch):
    before = torch.get_num_threads()
    try:
        line = threads.set_threads(1, 0, "train demo")
        assert line == "train demo: 1 torch thread (set by train.threads)"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
