"""End to end: the release binary replays the bundled sample; independent readers (DuckDB,
pyarrow) read the Parquet snapshots back and find the figures the summary printed."""
import json
import pathlib
import socket
import subprocess

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


# Every snapshot table whose rows do not depend on the arrival order of records across workers
# (limit events of desks and firms do: docs/architecture.md).
TABLES = ["positions", "exposures", "factor_exposures", "volatility", "correlation", "risk", "stress", "regimes"]


def test_summary_is_readable(sample_run):
    out = sample_run["stdout"]
    for heading in ["records read", "rejected", "firm (USD)", "top accounts by gross",
                    "by asset class", "by currency", "throughput", "latency"]:
        assert heading in out, out
    s = sample_run["summary"]
    assert s["records"]["deltas"] > 1000 and s["records"]["ticks"] > 1000
    assert s["latency"]["count"] > 0 and s["latency"]["p99_us"] >= s["latency"]["p50_us"] > 0


def test_duckdb_reads_the_firm_totals_of_the_summary(sample_run):
    s = sample_run["summary"]
    out = sample_run["out"]
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT scope_id, net, gross, epoch_ns(as_of) AS as_of, "date"
        FROM read_parquet('{out}/exposures/*/*.parquet', hive_partitioning = true)
        WHERE scope = 'firm' AND dimension = 'total'
          AND as_of = (SELECT max(as_of) FROM read_parquet('{out}/exposures/*/*.parquet'))
        ORDER BY scope_id
        """
    ).fetchall()
    assert len(rows) == len(s["firms"]) >= 1
    for (firm, net, gross, as_of, date), fig in zip(rows, sorted(s["firms"], key=lambda f: f["name"])):
        assert firm == fig["name"]
        assert close(net, fig["net"]) and close(gross, fig["gross"]), (net, gross, fig)
        assert as_of == s["as_of"]
        assert str(date) == "2026-03-02"


def test_pyarrow_positions_add_up_to_the_firm_net(sample_run):
    s = sample_run["summary"]
    dataset = ds.dataset(sample_run["out"] / "positions", format="parquet", partitioning="hive")
    table = dataset.to_table()
    as_of = table.column("as_of").cast("int64").to_pylist()
    rows = [r for r, t in zip(table.to_pylist(), as_of) if t == s["as_of"]]
    assert rows, "positions at the last as_of"
    net = sum(r["exposure"] for r in rows if r["exposure"] is not None)
    firm_net = sum(f["net"] for f in s["firms"])
    assert close(net, firm_net, rel=1e-9), (net, firm_net)
    # qty and price are exact decimals.
    assert str(table.schema.field("qty").type) == "decimal128(38, 8)"


def test_float_columns_are_written_without_a_dictionary(sample_run):
    # benches/snapshot_write.rs: a float column's dictionary would fill and be dropped.
    out = sample_run["out"]
    for table in ["positions", "exposures"]:
        path = sorted((out / table).glob("*/*.parquet"))[-1]
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows > 0
        columns = [meta.row_group(0).column(c) for c in range(meta.num_columns)]
        floats = {c.path_in_schema for c in columns if c.physical_type == "DOUBLE"}
        dictionary = {c.path_in_schema for c in columns if c.has_dictionary_page}
        assert floats and not floats & dictionary, (table, floats & dictionary)
        assert {"scope_id" if table == "exposures" else "account"} <= dictionary, (table, dictionary)


def test_by_asset_class_matches_positions(sample_run):
    s = sample_run["summary"]
    out = sample_run["out"]
    got = dict(duckdb.connect().execute(
        f"""
        SELECT asset_class, sum(abs(exposure)) FROM read_parquet('{out}/positions/*/*.parquet')
        WHERE epoch_ns(as_of) = {s["as_of"]} AND exposure IS NOT NULL GROUP BY asset_class
        """
    ).fetchall())
    for fig in s["by_asset_class"]:
        assert close(got[fig["name"]], fig["gross"], rel=1e-9), (fig, got)


def test_every_snapshot_is_complete(sample_run):
    out = sample_run["out"]
    markers = sorted((out / "_snapshots").glob("*/_SUCCESS"))
    assert len(markers) == sample_run["summary"]["snapshots"] >= 5
    for marker in markers:
        manifest = json.loads(marker.read_text())
        for path, rows in manifest["files"]:
            assert (out / path).exists(), path
        assert not list(out.rglob(".*.tmp")), "no temporary files left behind"


def test_bad_lines_are_dead_lettered_with_position_and_reason(sample_run):
    out = sample_run["out"]
    s = sample_run["summary"]
    letters = [json.loads(l) for l in (out / "dead-letter.jsonl").read_text().splitlines()]
    assert len(letters) == s["dead_letters"]
    reasons = sorted(l["reason"] for l in letters)
    assert any(r.startswith("invalid JSON record") for r in reasons), reasons
    assert any("is not positive" in r for r in reasons), reasons
    assert any(r.startswith("unknown account") for r in reasons), reasons
    assert any(r.startswith("unknown instrument") for r in reasons), reasons
    assert any("missing field `qty`" in r for r in reasons), reasons
    for l in letters:
        assert l["source"] == "file" and l["file"].endswith(".jsonl") and l["line"] >= 1 and l["payload"]
        # The line number points at the raw line.
        raw = (ROOT / "datasets" / "sample" / l["file"]).read_text().splitlines()[l["line"] - 1]
        assert l["payload"].strip() == raw.strip() or json.loads(l["payload"]) == json.loads(raw)


def test_unknown_config_key_is_an_error_naming_it(riskflow, tmp_path):
    cfg = tmp_path / "riskflow.toml"
    cfg.write_text('[risk]\nsnapshot_intervall = "5s"\n')
    proc = subprocess.run([riskflow, "run", "--config", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "snapshot_intervall" in proc.stderr


def test_two_workers_write_the_same_snapshots(riskflow, sample_run, tmp_path):
    proc = subprocess.run([riskflow, "run", "-w", "2", "-q", "--out", str(tmp_path / "o2")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect()
    q = "SELECT * EXCLUDE (date) FROM read_parquet('{}/{}/*/*.parquet', hive_partitioning = true) ORDER BY ALL"
    for table in TABLES:
        one = con.execute(q.format(sample_run["out"], table)).fetchall()
        two = con.execute(q.format(tmp_path / "o2", table)).fetchall()
        assert one == two, table


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_of_two_processes_writes_the_same_snapshots(riskflow, sample_run, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1:{free_port()}\n127.0.0.1:{free_port()}\n")
    out = tmp_path / "cluster"
    procs = [subprocess.Popen([riskflow, "run", "-q", "--out", str(out), "-w", "2", "-n", "2", "-p", str(p),
                               "-h", str(hosts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    con = duckdb.connect()
    q = "SELECT * EXCLUDE (date) FROM read_parquet('{}/{}/*/*.parquet', hive_partitioning = true) ORDER BY ALL"
    for table in TABLES:
        one = con.execute(q.format(sample_run["out"], table)).fetchall()
        cluster = con.execute(q.format(out, table)).fetchall()
        assert one == cluster, table
