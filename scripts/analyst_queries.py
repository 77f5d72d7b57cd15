#!/usr/bin/env python3
"""Example analyst queries over a riskflow snapshot directory, with DuckDB and pyarrow.

    python scripts/analyst_queries.py out [--desk DESK] [--date YYYY-MM-DD]

Prints: the top accounts by VaR (with their ES, stress loss and gross exposure) and by gross
exposure at the latest complete snapshot, the exposure history of one desk, and the limit
breaches of one day.
"""
import argparse
import json
import pathlib

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds


def complete_snapshots(out: pathlib.Path):
    """as_of (ns) of every snapshot whose _SUCCESS marker exists."""
    return sorted(int(p.parent.name) for p in (out / "_snapshots").glob("*/_SUCCESS"))


def top_accounts(con, out, as_of, n=5):
    return con.execute(
        f"""
        SELECT scope_id AS account, gross, net, concentration
        FROM read_parquet('{out}/exposures/*/*.parquet', hive_partitioning = true)
        WHERE scope = 'account' AND dimension = 'total' AND epoch_ns(as_of) = {as_of}
        ORDER BY gross DESC, account LIMIT {n}
        """
    ).fetchall()


def top_accounts_by_var(con, out, as_of, n=3):
    """The `risk` table joined with the account totals of the same snapshot."""
    return con.execute(
        f"""
        SELECT r.scope_id AS account, r.var_parametric, r.es_parametric, r.var_historical, r.stress_worst,
               r.worst_scenario, e.gross
        FROM read_parquet('{out}/risk/*/*.parquet', hive_partitioning = true) r
        JOIN read_parquet('{out}/exposures/*/*.parquet', hive_partitioning = true) e
          ON e.as_of = r.as_of AND e.scope = r.scope AND e.scope_id = r.scope_id AND e.dimension = 'total'
        WHERE r.scope = 'account' AND epoch_ns(r.as_of) = {as_of}
        ORDER BY r.var_parametric DESC NULLS LAST, account LIMIT {n}
        """
    ).fetchall()


def desk_history(out, desk):
    """Exposure history of one desk, with pyarrow."""
    table = ds.dataset(out / "exposures", format="parquet", partitioning="hive").to_table(
        filter=(ds.field("scope") == "desk") & (ds.field("scope_id") == desk) & (ds.field("dimension") == "total"),
        columns=["as_of", "gross", "net"],
    )
    table = table.sort_by("as_of")
    as_of = pc.cast(table["as_of"], "int64").to_pylist()
    return list(zip(as_of, table["gross"].to_pylist(), table["net"].to_pylist()))


def breaches_of_day(con, out, date):
    return con.execute(
        f"""
        SELECT epoch_ns(ts) AS ts, limit_id, scope, scope_id, metric, utilisation, prev_state, state
        FROM read_parquet('{out}/breaches/*/*.parquet', hive_partitioning = true)
        WHERE "date" = DATE '{date}' AND state = 'BREACH'
        ORDER BY ts, limit_id
        """
    ).fetchall()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--desk")
    parser.add_argument("--date")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    out = args.out.resolve()
    snapshots = complete_snapshots(out)
    if not snapshots:
        raise SystemExit(f"no complete snapshot under {out}")
    con = duckdb.connect()
    latest = snapshots[-1]
    desk = args.desk or con.execute(
        f"SELECT min(scope_id) FROM read_parquet('{out}/exposures/*/*.parquet') WHERE scope = 'desk'"
    ).fetchone()[0]
    date = args.date or con.execute(
        f"SELECT CAST(max(\"date\") AS VARCHAR) FROM read_parquet('{out}/exposures/*/*.parquet', hive_partitioning = true)"
    ).fetchone()[0]
    result = {
        "latest_as_of": latest,
        "top_by_var": top_accounts_by_var(con, out, latest),
        "top_accounts": top_accounts(con, out, latest),
        "desk": desk,
        "desk_history": desk_history(out, desk),
        "date": date,
        "breaches": breaches_of_day(con, out, date),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"top accounts by VaR at {latest}:")
    for account, var, es, hvar, stress, scenario, gross in result["top_by_var"]:
        print(f"  {account:<12} VaR {var:>14,.0f}  ES {es:>14,.0f}  hist VaR {hvar:>12,.0f}  "
              f"stress {stress:>14,.0f} ({scenario or '-'})  gross {gross:>16,.0f}")
    print(f"top accounts by gross at {latest}:")
    for account, gross, net, conc in result["top_accounts"]:
        print(f"  {account:<12} gross {gross:>16,.0f}  net {net:>16,.0f}  concentration {conc:.2f}")
    print(f"exposure history of desk {desk}:")
    for as_of, gross, net in result["desk_history"]:
        print(f"  {as_of}  gross {gross:>16,.0f}  net {net:>16,.0f}")
    print(f"breaches on {date}: {len(result['breaches'])}")
    for ts, limit_id, scope, scope_id, metric, u, prev, state in result["breaches"]:
        print(f"  {ts}  {limit_id:<10} {scope} {scope_id:<10} {metric:<22} {u:7.1%}  {prev} -> {state}")


if __name__ == "__main__":
    main()
