"""The GPU check exits cleanly, with a message and nothing written, where no GPU is visible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_main_without_gpu_prints_why_and_returns_zero(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(gpu_check, "gpu_available", lambda: False)
    monkeypatch.setattr(gpu_check, "write_result", lambda *a, **k: pytest.fail("nothing may be written"))
    assert gpu_check.main([]) == 0
    assert "no CUDA GPU is visible" in capsys.readouterr().out


def test_shell_script_without_gpu_exits_zero() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU is visible" in result.stdout
