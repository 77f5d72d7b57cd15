"""Shared fixtures: the release binary and one run of the bundled sample."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def riskflow():
    path = os.environ.get("RISKFLOW_BIN", str(ROOT / "target" / "release" / "riskflow"))
    assert pathlib.Path(path).exists(), f"build the binary first: {path}"
    return path


@pytest.fixture(scope="session")
def sample_run(riskflow, tmp_path_factory):
    """`riskflow run` with no arguments, from an empty directory (so ./out is used)."""
    cwd = tmp_path_factory.mktemp("run")
    proc = subprocess.run(
        [riskflow, "run", "--summary-json", "summary.json", "-q"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((cwd / "summary.json").read_text())
    return {"cwd": cwd, "out": cwd / "out", "stdout": proc.stdout, "summary": summary}
