"""The analyst example runs against a real run's output and agrees with the summary."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_analyst_queries_run_and_match_the_run(sample_run):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "analyst_queries.py"), str(sample_run["out"]), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    s = sample_run["summary"]
    assert result["latest_as_of"] == s["as_of"]
    top = [(a, g) for a, g, _, _ in result["top_accounts"]]
    assert [a for a, _ in top] == [f["name"] for f in s["top_accounts"]]
    assert all(abs(g - f["gross"]) <= 1e-9 * max(1.0, g) for (_, g), f in zip(top, s["top_accounts"]))
    assert len(result["desk_history"]) == s["snapshots"]
    by_var = [r for r in s["analytics"]["risk"] if r["scope"] == "account"]
    assert [row[0] for row in result["top_by_var"]] == [r["scope_id"] for r in by_var]
    assert all(abs(row[1] - r["var_parametric"]) <= 1e-9 * row[1] for row, r in zip(result["top_by_var"], by_var))
    lines = (sample_run["out"] / "risk-breaches.jsonl").read_text().splitlines()
    breaches = [b for b in map(json.loads, lines) if b["state"] == "BREACH"]
    assert len(result["breaches"]) == len(breaches)
    # The human-readable form prints the three sections.
    text = subprocess.run([sys.executable, str(ROOT / "scripts" / "analyst_queries.py"), str(sample_run["out"])],
                          capture_output=True, text=True, timeout=120).stdout
    assert "top accounts by VaR" in text and "top accounts by gross" in text and "exposure history of desk" in text and "breaches on" in text
