"""Analytics through the real binary: daily closes imported from a CSV yield RiskMetrics figures
that match a plain Python computation, and the run's summary and tables carry the analytics."""
import datetime
import json
import math
import subprocess

import pyarrow.dataset as ds


def test_daily_closes_from_csv_give_riskmetrics_figures(riskflow, tmp_path):
    # Two instruments over weekdays only: the weekend bars are skipped, so a return is from one
    # trading day's close to the next.
    days, closes = [], {"SPY": [], "QQQ": []}
    day = datetime.date(2025, 1, 6)
    while len(days) < 40:
        if day.weekday() < 5:
            k = len(days)
            days.append(day)
            closes["SPY"].append(round(500 * (1 + 0.01 * math.sin(k)), 2))
            closes["QQQ"].append(round(400 * (1 + 0.02 * math.cos(1.7 * k)), 2))
        day += datetime.timedelta(days=1)
    csv = tmp_path / "closes.csv"
    rows = [f"{d.isoformat()},{n},{closes[n][i]}" for i, d in enumerate(days) for n in closes]
    csv.write_text("date,instrument,close\n" + "\n".join(rows) + "\n")
    data, out = tmp_path / "ds", tmp_path / "out"
    proc = subprocess.run([riskflow, "gen", "--from-csv", str(csv), "--out", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "daily.toml"
    config.write_text('[risk]\nsnapshot_interval = "7d"\n[analytics]\nwindow = 10\nbenchmarks = ["SPY", "QQQ"]\n')
    proc = subprocess.run([riskflow, "run", "-q", "--replay", str(data), "--config", str(config), "--out", str(out),
                           "--summary-json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    vol = ds.dataset(out / "volatility", format="parquet", partitioning="hive").to_table().to_pylist()
    last = max(r["as_of"] for r in vol)
    final = {r["factor"]: r for r in vol if r["as_of"] == last}
    lam = 0.94
    for name, series in closes.items():
        # The last close falls in a bar that ends after the input does, so it is not closed.
        series = series[:-1]
        rets = [math.log(b / a) for a, b in zip(series, series[1:])]
        ewma = rets[0] ** 2
        for r in rets[1:]:
            ewma = lam * ewma + (1 - lam) * r * r
        window = sum(r * r for r in rets[-10:]) / 10
        row = final[name]
        assert row["returns"] == len(rets) == 38
        assert abs(row["ewma_var"] - ewma) <= 1e-12 * ewma
        assert abs(row["window_var"] - window) <= 1e-12 * window
        assert abs(row["ewma_vol_annual"] - math.sqrt(ewma * 252)) <= 1e-12
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["analytics"]["factors"] == 2
    assert {r[0] for r in summary["analytics"]["regimes"]} >= {"vol", "markov"}


def test_sample_run_writes_every_analytics_table(sample_run):
    out = sample_run["out"]
    for table in ["volatility", "correlation", "risk", "stress", "regimes"]:
        rows = ds.dataset(out / table, format="parquet", partitioning="hive").to_table()
        assert rows.num_rows > 0, table
    risk = sample_run["summary"]["analytics"]["risk"]
    firm = [r for r in risk if r["scope"] == "firm"][0]
    assert firm["var_parametric"] > 0 and firm["stress_worst"] > 0
    events = [json.loads(line) for line in (out / "risk-regimes.jsonl").read_text().splitlines()]
    assert len(events) == sample_run["summary"]["analytics"]["regime_events"] > 0
    assert all(e["prev_regime"] != e["regime"] for e in events)
    assert "risk " in sample_run["stdout"] and "regimes:" in sample_run["stdout"]
