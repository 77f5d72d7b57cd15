"""`riskflow recon` against real snapshots: agreement on untouched runs (the bundled sample and
the daily dataset), and each kind of tampering (a changed value, a deleted row, an added row, a
changed regime) named and failing."""
import json
import pathlib
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

BOOK = ["positions", "exposures", "factor_exposures"]
ANALYTICS = ["volatility", "correlation", "risk", "stress", "regimes"]


def recon(riskflow, out, tmp_path, *args):
    report = tmp_path / "report.json"
    proc = subprocess.run([riskflow, "recon", "--snapshots", str(out), "--report", str(report), *args],
                          capture_output=True, text=True, timeout=300)
    return proc, json.loads(report.read_text()) if report.exists() else None


def assert_agreement(proc, report, snapshots):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["ok"] and report["snapshots"] == snapshots
    matched = {}
    for t in report["tables"]:
        assert not t["absent"], t["table"]
        assert t["missing"] == [] and t["extra"] == [] and t["failed_values"] == 0, t
        assert t["mismatches"] == [], t
        matched[t["table"]] = matched.get(t["table"], 0) + t["matched"]
        if t["table"] in BOOK:
            # Exact sums in the engine and the batch: bit for bit.
            assert t["max_abs_diff"] == 0.0, t
        else:
            # Floating-point figures: the same formulas, summed in another order at most.
            assert t["max_rel_diff"] <= 1e-12, t
    for table in BOOK + ANALYTICS:
        assert matched.get(table, 0) > 0, (table, matched)
    assert "agreement within tolerance" in proc.stdout


def test_recon_agrees_exactly_with_the_sample_run(riskflow, sample_run, tmp_path):
    proc, report = recon(riskflow, sample_run["out"], tmp_path)
    assert_agreement(proc, report, sample_run["summary"]["snapshots"])


@pytest.fixture(scope="module")
def daily_run(riskflow, tmp_path_factory):
    """The daily dataset with its own configuration: one-day bars (from its dataset.toml), a
    snapshot every four weeks."""
    work = tmp_path_factory.mktemp("daily")
    config = ROOT / "datasets" / "daily" / "riskflow.toml"
    out = work / "out"
    proc = subprocess.run(
        [riskflow, "run", "--replay", str(ROOT / "datasets" / "daily"), "--config", str(config),
         "--out", str(out), "--summary-json", str(work / "summary.json"), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return {"config": config, "out": out, "summary": json.loads((work / "summary.json").read_text())}


def test_recon_agrees_with_the_daily_run(riskflow, daily_run, tmp_path):
    proc, report = recon(riskflow, daily_run["out"], tmp_path,
                         "--input", str(ROOT / "datasets" / "daily"), "--config", str(daily_run["config"]),
                         "--limits")
    assert daily_run["summary"]["snapshots"] > 10
    assert_agreement(proc, report, daily_run["summary"]["snapshots"])
    last = [t for t in report["tables"] if t["table"] == "volatility"][-1]
    assert last["matched"] >= 10


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


def test_recon_names_a_changed_volatility_risk_figure_and_regime(riskflow, sample_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sample_run["out"], out)

    def tamper(table, change):
        path = last_file(out, table)
        rows = pq.read_table(path).to_pylist()
        changed = change(rows)
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
        return changed

    def vol(rows):
        rows[0]["ewma_vol_annual"] *= 1 + 1e-6
        return [rows[0]["factor"]]

    def risk(rows):
        row = next(r for r in rows if r["var_parametric"] is not None)
        row["var_parametric"] *= 1.001
        return [row["scope"], row["scope_id"]]

    def regime(rows):
        row = next(r for r in rows if r["signal"] == "vol")
        row["regime"] = "crisis" if row["regime"] != "crisis" else "calm"
        return [row["signal"]]

    vol_key, risk_key, regime_key = tamper("volatility", vol), tamper("risk", risk), tamper("regimes", regime)
    proc, report = recon(riskflow, out, tmp_path)
    assert proc.returncode != 0
    assert "DISAGREEMENT" in proc.stdout
    bad = {t["table"]: t for t in report["tables"] if t["failed_values"] or t["missing"] or t["extra"]}
    assert sorted(bad) == ["regimes", "risk", "volatility"], sorted(bad)
    assert bad["volatility"]["failed_values"] == 1
    assert bad["volatility"]["worst"][:2] == [vol_key, "ewma_vol_annual"]
    assert bad["risk"]["failed_values"] == 1
    assert bad["risk"]["worst"][:2] == [risk_key, "var_parametric"]
    assert abs(bad["risk"]["max_rel_diff"] - 0.001 / 1.001) < 1e-9
    assert [m[:2] for m in bad["regimes"]["mismatches"]] == [[regime_key, "regime"]]
    assert "/".join(risk_key) in proc.stdout and "var_parametric" in proc.stdout
    assert "differs regimes" in proc.stdout


def test_recon_agrees_on_limit_events(riskflow, sample_run, tmp_path):
    proc, report = recon(riskflow, sample_run["out"], tmp_path, "--limits")
    assert proc.returncode == 0, proc.stdout
