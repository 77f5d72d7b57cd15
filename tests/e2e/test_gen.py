"""`riskflow gen` through the CLI reproduces the checked-in sample byte for byte."""
import hashlib
import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_gen_sample_reproduces_the_manifest_hashes(riskflow, tmp_path):
    proc = subprocess.run([riskflow, "gen", "--preset", "sample", "--seed", "42", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((ROOT / "datasets" / "sample" / "manifest.json").read_text())
    assert manifest["seed"] == 42
    for f in manifest["files"]:
        digest = hashlib.sha256((tmp_path / f["name"]).read_bytes()).hexdigest()
        assert digest == f["sha256"], f["name"]
    assert sum(f["bytes"] for f in manifest["files"]) < 1 << 20
