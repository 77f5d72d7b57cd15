#!/usr/bin/env bash
# Runs every benchmark in one go and writes docs/performance.md: each figure beside the
# target (DESIGN.md §9) and the plain single-threaded baseline measured in the same run,
# with the machine and the commands. Sizes can be scaled down for a quick look:
#   UPDATES=2000000 WARMUP=1000000 DAY_DELTAS=1000000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATES="${UPDATES:-2000000}"
WARMUP="${WARMUP:-1000000}"
DAY_DELTAS="${DAY_DELTAS:-1000000}"
work="${TMPDIR:-/tmp}/riskflow-bench"
mkdir -p "$work"

cargo build --release --quiet --benches --bin riskflow
bench() { cargo bench --quiet --bench "$@" 2>/dev/null; }
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }

echo "throughput..." >&2
throughput=$(bench throughput -- 10000 5000 "$UPDATES" 1000 "$WARMUP")
echo "latency..." >&2
lat_10k_1=$(bench latency -- 10000 3 1)
lat_100k_1=$(bench latency -- 100000 3 1)
lat_100k_2=$(bench latency -- 100000 3 2)
lat_100k_cold=$(bench latency -- 100000 3 1 100000 0)
lat_100k_bars=$(bench latency -- 100000 3 1 100000 1000000 --bars)
lat_1m_1=$(bench latency -- 1000000 1 1)
stalls=$(bench stalls -- 3)
stalls_2=$(bench stalls -- 3 2)
echo "bar close..." >&2
bar_100=$(bench bar_close -- 100 300)
bar_500=$(bench bar_close -- 500 300)
bar_book=$(bench bar_close -- 5000 300 --book)
echo "day replay..." >&2
rm -rf "$work/day" "$work/day-out"
./target/release/riskflow gen --preset day --deltas "$DAY_DELTAS" --out "$work/day" >/dev/null
# Five-minute bars: see "Analytics at scale" in docs/performance-notes.md.
cat > "$work/day.toml" <<'TOML'
[risk]
snapshot_interval = "30m"
[analytics]
bar = "5m"
correlation_factors = ["SPX", "SX5E", "NKY", "UKX"]
TOML
day_start=$(date +%s.%N)
day_rss=$(rss ./target/release/riskflow run -q --replay "$work/day" --out "$work/day-out" --config "$work/day.toml" --summary-json "$work/day.json")
day_end=$(date +%s.%N)
day_secs=$(python3 -c "print(f'{$day_end - $day_start:.1f}')")
day_records=$(python3 -c "import json; print(json.load(open('$work/day.json'))['records']['deltas'])")
day_snapshots=$(python3 -c "import json; print(json.load(open('$work/day.json'))['snapshots'])")
snapshot_write=$(bench snapshot_write -- 20 "$work/day-out")
echo "scale-out..." >&2
# The same replay with two workers in one process, and as a cluster of two processes on
# 127.0.0.1 (one worker each): timely's -n/-p with a hostfile.
timed() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); python3 -c "print(f'{$t1 - $t0:.1f}')"; }
rm -rf "$work/day-w2"
w2_secs=$(timed ./target/release/riskflow run -q -w 2 --replay "$work/day" --out "$work/day-w2" --config "$work/day.toml")
printf '127.0.0.1:%s\n127.0.0.1:%s\n' 2401 2402 > "$work/hosts"
rm -rf "$work/day-n2"
cluster_start=$(date +%s.%N)
pids=()
for p in 0 1; do
  ./target/release/riskflow run -q -w 1 -n 2 -p "$p" -h "$work/hosts" --replay "$work/day" --out "$work/day-n2" \
    --config "$work/day.toml" >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
cluster_end=$(date +%s.%N)
n2_secs=$(python3 -c "print(f'{$cluster_end - $cluster_start:.1f}')")
echo "peak memory..." >&2
base_rss=$(rss cargo bench --quiet --bench throughput -- 10000 5000 200000 1000)

machine="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), rustc $(rustc --version | cut -d' ' -f2)"
{
cat <<MD
# Performance

Measured by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d): $machine. Release build.
Every figure below is from that one run; the targets are DESIGN.md §9's. Regenerate with
\`scripts/bench.sh\` (sizes: \`UPDATES=$UPDATES WARMUP=$WARMUP DAY_DELTAS=$DAY_DELTAS\`).

## Throughput through exposures and limits (in-memory source)

\`cargo bench --bench throughput -- 10000 5000 $UPDATES 1000 $WARMUP\` — target ≥ 5M updates/s
sustained. The baselines do the same exposure and limit updates in one thread, in
\`benches/baseline.rs\`: a plain loop with HashMaps keyed by the records' strings, and the
leanest plain loop (ids interned to integers, flat arrays); both count the same limit events.
*Cold* is the first $WARMUP updates, while the positions and limit tallies are created;
*sustained* is the $UPDATES after them.

\`\`\`
$throughput
\`\`\`

## Ingest-to-output latency, open loop

\`cargo bench --bench latency -- RATE SECONDS WORKERS [EPOCH_µs] [WARM-UP] [--bars]\` — target at
100k/s: mean ≤ 10 µs, p99 ≤ 50 µs. Ingest time is each record's scheduled release time (no
coordinated omission). The source feeds the graph as the Kafka driver does: each record is
sent the moment it is due, and the input time advances once per 100 ms epoch (the default
\`engine.epoch\`). The live updates are counted two ways. *Live exposure update*: each
update one sample; a delta gives three (account, desk, firm), a tick one per scope it moved
(~50 on a book of 200k positions), so these figures are mostly ticks'. *A record's last live
update*: each input record one sample, at the last of its live updates on any worker (a
record that moved nothing, such as a tick of an instrument nobody holds, has none). Before
the clock starts, 1M updates are fed as fast as the graph takes them, so the book is as full
as through a trading day; the *cold* line starts from an empty book that grows while measured.
The yardstick, in the same run of each line: the two plain baselines of
\`benches/baseline.rs\`, warmed up alike, then offered the same records at the same rate in
one thread; a record's latency is from its scheduled time to the end of its apply (their
tables are sized up front: one that doubles pauses for ~0.1 s at a million entries).

\`\`\`
$lat_10k_1
$lat_100k_1
$lat_100k_2
$lat_1m_1
\`\`\`

The machine's own stalls: a thread that only reads the clock in a loop, never blocking, is
stopped this often (\`cargo bench --bench stalls -- 3\`, same run). A record that arrives
during a stall waits for it, whatever the engine does; the baselines' p99 above shows what
they make of a plain loop's tail. Then two such threads at once, as two workers spin on this
machine's two cores (\`cargo bench --bench stalls -- 3 2\`): each is counted alike.

\`\`\`
$stalls
$stalls_2
\`\`\`

Cold start:

\`\`\`
$lat_100k_cold
\`\`\`

Bar ends while measured (\`--bars\`). The lines above give records epoch counters for times,
which never reach a bar end. Here each record carries its scheduled time as its event time,
enters at that time's epoch, the input time follows the latest event time sent (as the Kafka
driver's watermark, with no lateness), and one-second bars end while measured (three of them);
VaR limits on the firm, every desk and every fourth account make each bar end revalue all ~200k
positions on the analytics' thread. The limits take a change after a bar end only once that
bar's figures are in, so that every state sees them in event-time order (docs/architecture.md,
Limits): the breach-detection line shows that wait (the bar's revaluation), and the live lines
the worker's own work at a bar end (the bar's parts for the analytics, then the changes the
limits held, taken at once). One second is the engine's default bar (docs/configuration.md);
with the day replay's five-minute bars below, 1/300 as many records fall in that wait.

\`\`\`
$lat_100k_bars
\`\`\`

## Bar close with N factors

\`cargo bench --bench bar_close -- N 300\` — target with 500 factors ≤ 10 ms. One bar close:
returns, EWMA variances and the N×N covariance, window and history, regime signals, and VaR,
ES and stress refreshed for the firm, 10 desks and 20 accounts (500 positions). The covariance
update and the firm's eᵀΣe grow as N², historical P&L as N × history.

\`\`\`
$bar_100
$bar_500
\`\`\`

With the latency bench's book instead (\`-- 5000 300 --book\`: 5,000 factors, 10,000 accounts
of 20 positions, VaR on the firm, the desks and every fourth account; 300 bars, so that the
history of returns fills, 250 bars), one bar close is what a change just after a bar end waits
for in the latency bench's \`--bars\` line (whose run spans ~13 bars, so a shorter history):

\`\`\`
$bar_book
\`\`\`

## A trading day replayed from files, end to end

\`riskflow gen --preset day --deltas $DAY_DELTAS\` (10k accounts × 5k instruments), then
\`riskflow run --replay\` with 30-minute snapshots and 5-minute bars: $day_records deltas in **$day_secs s** (decode,
book, limits, $day_snapshots Parquet snapshots of ~200k positions), peak RSS $((day_rss / 1024)) MiB.
Target: 100M deltas in ≤ 60 s.

The snapshot writer's thread encodes each snapshot's tables as Parquet while the worker and
the analytics go on. \`cargo bench --bench snapshot_write -- 20 OUT\` encodes the two large
tables of the day's last snapshot in memory, as riskflow writes them and with the Parquet
writer's defaults (a dictionary for every column), alternately, 20 times each:

\`\`\`
$snapshot_write
\`\`\`

## Scale-out: two workers, two processes

The same day replay (\`--config\` as above): one process with one worker **$day_secs s**; one
process with two workers (\`-w 2\`) **$w2_secs s**; a cluster of two processes on 127.0.0.1 with
one worker each (\`-w 1 -n 2 -p 0|1 -h hosts\`, both started together, timed until both exit)
**$n2_secs s**. That a cluster writes the same snapshots as one process is asserted by
\`tests/e2e/test_run.py\` (replay) and \`tests/e2e/test_kafka.py\` (Kafka).

## Peak memory, 10k accounts × 5k instruments

\`/usr/bin/time -f %M cargo bench --bench throughput -- 10000 5000 200000 1000\` (baseline and
the dataflow with 1 and 2 workers in one process): peak RSS $((base_rss / 1024)) MiB.
MD
cat docs/performance-notes.md
} > docs/performance.md
echo "wrote docs/performance.md" >&2
