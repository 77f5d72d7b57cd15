"""`riskflow recon` against real snapshots: exact agreement on an untouched run, and each
kind of tampering (a changed value, a deleted row, an added row) named and failing."""
import json
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq


def recon(riskflow, out, tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run([riskflow, "recon", "--snapshots", str(out), "--report", str(report)],
                          capture_output=True, text=True, timeout=300)
    return proc, json.loads(report.read_text()) if report.exists() else None


def test_recon_agrees_exactly_with_the_sample_run(riskflow, sample_run, tmp_path):
    proc, report = recon(riskflow, sample_run["out"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["ok"] and report["snapshots"] == sample_run["summary"]["snapshots"]
    for t in report["tables"]:
        assert t["matched"] > 0 or t["table"] != "positions"
        assert t["missing"] == [] and t["extra"] == []
        assert t["max_abs_diff"] == 0.0, t
    assert "agreement within tolerance" in proc.stdout


def last_file(out, table):
    return sorted((out / table).glob("*/*.parquet"))[-1]


def test_recon_names_an_altered_a_deleted_and_an_added_row(riskflow, sample_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sample_run["out"], out)
    path = last_file(out, "exposures")
    rows = pq.read_table(path).to_pylist()
    altered = rows[0]
    altered["net"] = altered["net"] * (1 + 1e-6) + 1.0
    deleted = rows.pop(1)
    added = dict(rows[2], scope_id="NO-SUCH-ACCOUNT")
    rows.append(added)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)

    proc, report = recon(riskflow, out, tmp_path)
    assert proc.returncode != 0
    assert "DISAGREEMENT" in proc.stdout
    bad = [t for t in report["tables"] if t["table"] == "exposures" and not (t["missing"] == [] and t["extra"] == [] and t["failed_values"] == 0)]
    assert len(bad) == 1
    t = bad[0]
    key = lambda r: [r["scope"], r["scope_id"], r["dimension"], r["bucket"]]
    assert t["missing"] == [key(deleted)]
    assert t["extra"] == [key(added)]
    assert t["failed_values"] == 1
    assert t["worst"][0] == key(altered) and t["worst"][1] == "net"
    assert "/".join(key(deleted)) in proc.stdout and "NO-SUCH-ACCOUNT" in proc.stdout
