"""Package-level checks: the committed type stub matches the extension."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kvblockd

STUB = Path(__file__).resolve().parents[1] / "kvblockd" / "_core.pyi"


def test_core_stub_is_current(tmp_path) -> None:
    pytest.importorskip("nanobind")
    out = tmp_path / "_core.pyi"
    subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "kvblockd._core", "-o", str(out)],
                   check=True, cwd=tmp_path)
    assert out.read_text() == STUB.read_text(), (
        "python/kvblockd/_core.pyi is stale: regenerate with "
        "`python -m nanobind.stubgen -m kvblockd._core -o python/kvblockd/_core.pyi`")


def test_public_names() -> None:
    for name in kvblockd.__all__:
        assert hasattr(kvblockd, name), name
    assert (Path(kvblockd.__file__).parent / "py.typed").exists()
