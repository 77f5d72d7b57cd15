"""End to end over a real Kafka-protocol broker (tansu, started by scripts/kafka-up.sh):
the release binary consumes the input topics and publishes its outputs; kafka-python, an
independent client, produces the inputs and reads the outputs back; DuckDB reads the
snapshots. Each test uses its own topics (a name suffix), so tests never see each other's data.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import uuid

import duckdb
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "datasets" / "sample"
BROKER = os.environ.get("RISKFLOW_KAFKA", "127.0.0.1:9092")
PARTITIONS = 4
INPUTS = {  # config key → (default topic, dataset file, key field)
    "instruments": ("instruments", "instruments.jsonl", "id"),
    "accounts": ("accounts", "accounts.jsonl", "id"),
    "limits": ("limits", "limits.jsonl", "id"),
    "market_data": ("market-data", "market.jsonl", "instrument"),
    "position_deltas": ("position-deltas", "positions.jsonl", "account"),
}
OUTPUTS = {"breaches": "risk-breaches", "actions": "risk-actions", "regimes": "risk-regimes",
           "dead_letter": "risk-dead-letter"}
TABLES = ["positions", "exposures", "factor_exposures"]


@pytest.fixture(scope="module")
def broker():
    host, port = BROKER.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        pytest.fail(f"no broker at {BROKER} ({e}): start one with scripts/kafka-up.sh")
    return BROKER


class Topics:
    """The nine topics of one test, created fresh with a unique suffix, and a riskflow
    configuration naming them."""

    def __init__(self, broker, tmp_path, label, inputs_of=None):
        """`inputs_of`: read another instance's input topics (and create only output topics)."""
        self.suffix = f"{label}-{uuid.uuid4().hex[:8]}"
        self.names = {k: f"{d[0]}-{self.suffix}" for k, d in INPUTS.items()}
        if inputs_of is not None:
            self.names = {k: inputs_of.names[k] for k in INPUTS}
        fresh = {k: f"{v}-{self.suffix}" for k, v in OUTPUTS.items()}
        self.names.update(fresh)
        create = list(fresh.values()) + ([] if inputs_of else [self.names[k] for k in INPUTS])
        admin = KafkaAdminClient(bootstrap_servers=broker, client_id="riskflow-tests")
        admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in create])
        admin.close()
        self.config = tmp_path / f"kafka-{label}.toml"
        lines = ["[kafka]", f'brokers = "{broker}"', 'idle = "2s"', "[kafka.topics]"]
        lines += [f'{k} = "{v}"' for k, v in self.names.items()]
        self.config.write_text("\n".join(lines) + "\n")


def produce_dataset(broker, topics, dataset=SAMPLE):
    """Publishes a dataset with kafka-python as riskflow produce does: reference files first,
    then market data and deltas merged by ts, each line verbatim, keyed."""
    producer = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)

    def key_and_ts(line, field):
        try:
            obj = json.loads(line)
            key = obj.get(field)
            ts = obj.get("ts")
            return (key.encode() if isinstance(key, str) else None), (ts if isinstance(ts, int) else None)
        except ValueError:
            return None, None

    futures = []
    for name in ["instruments", "accounts", "limits"]:
        _, file, field = INPUTS[name]
        for line in (dataset / file).read_bytes().splitlines():
            if line.strip():
                key, _ = key_and_ts(line, field)
                futures.append(producer.send(topics.names[name], key=key, value=line.strip()))
    merged = []
    for order, name in enumerate(["market_data", "position_deltas"]):
        _, file, field = INPUTS[name]
        last = 0
        for n, line in enumerate((dataset / file).read_bytes().splitlines()):
            if not line.strip():
                continue
            key, ts = key_and_ts(line, field)
            last = ts if ts is not None else last
            merged.append((last, order, n, name, key, line.strip()))
    merged.sort()
    for _, _, _, name, key, value in merged:
        futures.append(producer.send(topics.names[name], key=key, value=value))
    producer.flush()
    for f in futures:
        f.get(timeout=60)  # raises if any was not delivered
    producer.close()
    return len(futures)


def read_topic(broker, topic):
    """Every message of a topic, from the start to the current end."""
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    out = []
    deadline = time.monotonic() + 60
    while any(consumer.position(tp) < ends[tp] for tp in parts):
        assert time.monotonic() < deadline, f"reading {topic} timed out"
        for tp, records in consumer.poll(timeout_ms=200).items():
            out.extend(records)
    consumer.close()
    return out


def run(riskflow, *args, check=True):
    proc = subprocess.run([riskflow, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def kafka_run(riskflow, topics, out, *extra):
    proc = run(riskflow, "run", "--kafka", BROKER, "--until-caught-up", "--config", str(topics.config),
               "--out", str(out), "-q", "--summary-json", str(out) + ".json", *extra)
    return proc, json.loads(pathlib.Path(str(out) + ".json").read_text())


def tables(out):
    con = duckdb.connect()
    q = "SELECT * EXCLUDE (date) FROM read_parquet('{}/{}/*/*.parquet', hive_partitioning = true) ORDER BY ALL"
    return {t: con.execute(q.format(out, t)).fetchall() for t in TABLES}


@pytest.fixture(scope="module")
def replay(riskflow, tmp_path_factory):
    """The bundled sample replayed from files: what every Kafka run must reproduce."""
    out = tmp_path_factory.mktemp("replay") / "out"
    run(riskflow, "run", "--replay", str(SAMPLE), "--out", str(out), "-q", "--summary-json", str(out) + ".json")
    events = {name: [json.loads(l) for l in (out / f"risk-{name}.jsonl").read_text().splitlines()]
              for name in ["breaches", "actions"]}
    letters = [json.loads(l) for l in (out / "dead-letter.jsonl").read_text().splitlines()]
    return {"out": out, "tables": tables(out), "events": events, "letters": letters,
            "summary": json.loads(pathlib.Path(str(out) + ".json").read_text())}


def final_states(events, key):
    """The state each limit (or scope) ends in: its event with the largest ts."""
    last = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        last[e[key]] = e["state"]
    return last


def same_final_states(mine, theirs, key):
    """Whether two event lists end every limit (scope) in one state; one without events is
    where it started (OK, or ACTIVE for a scope)."""
    a, b = final_states(mine, key), final_states(theirs, key)
    start = "OK" if key == "limit_id" else "ACTIVE"
    return {k: a.get(k, start) for k in a.keys() | b.keys()} == {k: b.get(k, start) for k in a.keys() | b.keys()}


def assert_same_final_states(broker, topics, other):
    """Two runs' events on their own output topics end every limit and scope in one state."""
    for name, key in [("breaches", "limit_id"), ("actions", "scope_id")]:
        mine = [json.loads(m.value) for m in read_topic(broker, topics.names[name])]
        theirs = [json.loads(m.value) for m in read_topic(broker, other.names[name])]
        assert same_final_states(mine, theirs, key), name


def assert_outputs_match_replay(broker, topics, replay, summary=None):
    """The events on the output topics, read by kafka-python: keyed by scope, as many as the
    engine raised, and ending every limit and scope in the state the replay ends it in. (The
    intermediate sequence of a limit may differ: records of one epoch reach the limits in
    arrival order, which on Kafka interleaves partitions differently from the replay's merge by
    ts, so a limit near a threshold may flap where the replay does not.)"""
    for name, key in [("breaches", "limit_id"), ("actions", "scope_id")]:
        messages = read_topic(broker, topics.names[name])
        got = [json.loads(m.value) for m in messages]
        for m, e in zip(messages, got):
            assert m.key.decode() == f"{e['scope']}:{e['scope_id']}"
        assert same_final_states(got, replay["events"][name], key), name
        if summary is not None:
            count = summary["limits"]["breach_events" if name == "breaches" else "action_events"]
            assert len(got) == count, name


def test_kafka_run_equals_replay_with_kafka_python_producer(broker, riskflow, replay, tmp_path):
    topics = Topics(broker, tmp_path, "a")
    n = produce_dataset(broker, topics)
    assert n == sum(1 for f in SAMPLE.glob("*.jsonl") for l in f.read_text().splitlines() if l.strip())
    _, summary = kafka_run(riskflow, topics, tmp_path / "out")
    assert tables(tmp_path / "out") == replay["tables"]
    r, k = summary["records"], replay["summary"]["records"]
    assert (r["ticks"], r["deltas"], r["rejected"], r["late"]) == (k["ticks"], k["deltas"], k["rejected"], 0)
    assert summary["duplicates"] == replay["summary"]["duplicates"] > 0
    assert summary["kafka"]["outputs"]["publish"]["failed"] == 0
    assert summary["kafka"]["lag"] == 0
    assert_outputs_match_replay(broker, topics, replay, summary)
    limits = summary["limits"]
    assert (limits["ok"], limits["warn"], limits["breach"]) == tuple(replay["summary"]["limits"][k] for k in ["ok", "warn", "breach"])
    # The durable record covers the final snapshot and every partition read to its end.
    offsets = json.loads((tmp_path / "out" / "_offsets.json").read_text())
    assert offsets["as_of"] == summary["as_of"]
    ends = {(m, p): 0 for m in [topics.names[k] for k in INPUTS] for p in range(PARTITIONS)}
    for name in INPUTS:
        for m in read_topic(broker, topics.names[name]):
            ends[(m.topic, m.partition)] = m.offset + 1
    got = {(o["topic"], o["partition"]): o["offset"] for o in offsets["offsets"]}
    assert got == ends
    # Reconciliation straight from the topics (the messages the engine saw) agrees on every
    # snapshot table. (Not the limit events: from Kafka they follow arrival order, docs/kafka.md.)
    proc = run(riskflow, "recon", "--kafka", BROKER, "--config", str(topics.config),
               "--snapshots", str(tmp_path / "out"), "--report", str(tmp_path / "recon.json"), check=False)
    report = json.loads((tmp_path / "recon.json").read_text())
    assert proc.returncode == 0 and report["ok"], proc.stdout
    assert report["snapshots"] == replay["summary"]["snapshots"]
    assert {t["table"] for t in report["tables"]} >= {"positions", "exposures", "risk", "volatility", "regimes"}


def test_riskflow_produce_and_two_workers(broker, riskflow, replay, tmp_path):
    topics = Topics(broker, tmp_path, "b")
    proc = run(riskflow, "produce", "--dataset", str(SAMPLE), "--config", str(topics.config), "-q")
    assert "published 6204 records" in proc.stdout, proc.stdout
    # Keys: ticks by instrument, deltas by account, reference records by id.
    ticks = read_topic(broker, topics.names["market_data"])
    assert len(ticks) == 4046
    good = [m for m in ticks if m.key is not None]
    assert all(json.loads(m.value)["instrument"] == m.key.decode() for m in good)
    by_key = {}
    for m in good:
        by_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(p) == 1 for p in by_key.values()), "one partition per key"
    _, one = kafka_run(riskflow, topics, tmp_path / "w1")
    assert tables(tmp_path / "w1") == replay["tables"]
    _, two = kafka_run(riskflow, topics, tmp_path / "w2", "-w", "2")
    assert two["workers"] == 2 and two["kafka"]["partitions"] == 5 * PARTITIONS
    assert tables(tmp_path / "w2") == replay["tables"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_cluster_of_two_processes_writes_the_same_snapshots(broker, riskflow, replay, tmp_path):
    topics = Topics(broker, tmp_path, "c")
    run(riskflow, "produce", "--dataset", str(SAMPLE), "--config", str(topics.config), "-q")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1:{free_port()}\n127.0.0.1:{free_port()}\n")
    out = tmp_path / "cluster"
    procs = [subprocess.Popen([riskflow, "run", "--kafka", BROKER, "--until-caught-up", "--config",
                               str(topics.config), "--out", str(out), "-q", "-w", "2", "-n", "2", "-p", str(p),
                               "-h", str(hosts), "--summary-json", f"{out}-{p}.json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    summaries = [json.loads(pathlib.Path(f"{out}-{p}.json").read_text()) for p in range(2)]
    assert sum(s["kafka"]["partitions"] for s in summaries) == 5 * PARTITIONS
    assert sum(s["records"]["deltas"] for s in summaries) == replay["summary"]["records"]["deltas"]
    assert tables(out) == replay["tables"]
    assert_outputs_match_replay(broker, topics, replay)


def test_kill_and_restart_loses_nothing_and_doubles_nothing(broker, riskflow, replay, tmp_path):
    topics = Topics(broker, tmp_path, "d")
    out = tmp_path / "out"
    # The engine follows a throttled producer live; it is killed once a snapshot is durable.
    engine = subprocess.Popen([riskflow, "run", "--kafka", BROKER, "--config", str(topics.config),
                               "--out", str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    producer = subprocess.Popen([riskflow, "produce", "--dataset", str(SAMPLE), "--config", str(topics.config),
                                 "--rate", "1500", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    offsets = out / "_offsets.json"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert engine.poll() is None, engine.stderr.read()
            assert time.monotonic() < deadline, "no durable snapshot"
            if offsets.exists() and json.loads(offsets.read_text())["as_of"] > 0 \
                    and len(list(out.glob("_snapshots/*/_SUCCESS"))) >= 2:
                break
            time.sleep(0.05)
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait()
    assert producer.poll() is None, "the producer was still publishing when the engine died"
    assert producer.wait(timeout=120) == 0, producer.stderr.read()
    durable = json.loads(offsets.read_text())
    kept = {m.parent.name: m.stat().st_mtime_ns for m in out.glob("_snapshots/*/_SUCCESS")
            if int(m.parent.name) <= durable["as_of"]}
    assert kept, "at least one snapshot was durable before the kill"

    restarted_ms = time.time() * 1000
    before = {name: read_topic(broker, topics.names[name]) for name in ["breaches", "actions", "dead_letter"]}
    _, summary = kafka_run(riskflow, topics, out)
    assert summary["kafka"]["resume"]["as_of"] == durable["as_of"]
    # State is rebuilt from the start of the topics: everything below the committed offsets is read again.
    assert summary["kafka"]["reread"] == sum(o["offset"] for o in durable["offsets"])
    # Durable snapshots are not rewritten; the final one equals the uninterrupted run's, and so
    # does every table.
    for name, mtime in kept.items():
        assert (out / "_snapshots" / name / "_SUCCESS").stat().st_mtime_ns == mtime, name
    assert tables(out) == replay["tables"]
    assert summary["as_of"] == replay["summary"]["as_of"]
    # Nothing lost: every limit and scope ends as in an uninterrupted run over the same topics
    # (its own output topics). Nothing doubled: the restarted run publishes no event at or
    # before the durable snapshot (the killed run delivered those before the snapshot became
    # durable), but a correction at its horizon, and nothing the topics already hold.
    reference = Topics(broker, tmp_path, "d-ref", inputs_of=topics)
    kafka_run(riskflow, reference, tmp_path / "uninterrupted")
    assert tables(tmp_path / "uninterrupted") == replay["tables"]
    # Where the recomputed path differs from the one the killed run left on the topics (arrival
    # order), the restart's horizon corrects them: no limit or scope is left out.
    assert_same_final_states(broker, topics, reference)
    epoch = 100_000_000
    for name in ["breaches", "actions"]:
        after = read_topic(broker, topics.names[name])
        old = {(m.partition, m.offset) for m in before[name]}
        new = [m for m in after if (m.partition, m.offset) not in old]
        assert all(m.timestamp >= restarted_ms - 1000 for m in new)
        # Only a correction at the restart's horizon can carry an earlier time: a limit the
        # recomputation has elsewhere than the killed run left it (arrival order).
        early = [m for m in new if json.loads(m.value)["ts"] <= durable["as_of"] - epoch]
        assert len(early) <= summary["kafka"]["outputs"]["corrected"], name
        assert not {(m.key, m.value) for m in new} & {(m.key, m.value) for m in before[name]}, name
    assert summary["kafka"]["outputs"]["suppressed"] > 0
    letters = read_topic(broker, topics.names["dead_letter"])
    assert len(letters) == len(replay["letters"])
    assert len({(m.key, m.value) for m in letters}) == len(letters)


def test_a_restart_brings_topics_that_end_elsewhere_to_the_engine_state(broker, riskflow, replay, tmp_path):
    """A restart's recomputed path can differ from the events a killed run left on the topics
    (arrival order). Here the topics are made to end elsewhere on purpose: one limit in BREACH
    and one scope in REDUCING that the engine has OK and ACTIVE. The restart publishes exactly
    the two events that bring them back, and nothing else."""
    topics = Topics(broker, tmp_path, "f")
    produce_dataset(broker, topics)
    out = tmp_path / "out"
    kafka_run(riskflow, topics, out)
    limits = {l["id"]: l for l in map(json.loads, (SAMPLE / "limits.jsonl").read_text().splitlines())}
    # A limit and a scope with events on this run's topics (its path follows arrival order, so
    # not the replay's) that end OK and ACTIVE, and the partition holding their key's events.
    held = {name: read_topic(broker, topics.names[name]) for name in ["breaches", "actions"]}
    ends = final_states([json.loads(m.value) for m in held["breaches"]], "limit_id")
    scopes = final_states([json.loads(m.value) for m in held["actions"]], "scope_id")
    limit = next(l for i, l in sorted(limits.items()) if ends.get(i) == "OK")
    scope = next(l for _, l in sorted(limits.items()) if scopes.get(l["scope_id"]) == "ACTIVE"
                 and l["scope_id"] != limit["scope_id"])
    ts = replay["summary"]["as_of"] + 1
    breach = {"limit": limit["limit"], "limit_id": limit["id"], "metric": limit["metric"], "prev_state": "OK",
              "scope": limit["scope"], "scope_id": limit["scope_id"], "state": "BREACH", "ts": ts,
              "utilisation": 1.5, "value": 1.5 * limit["limit"]}
    action = {"limit_id": scope["id"], "prev_state": "ACTIVE", "scope": scope["scope"],
              "scope_id": scope["scope_id"], "state": "REDUCING", "ts": ts}
    # Into that partition (kafka-python's partitioner is not librdkafka's), so that they follow.
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for name, event in [("breaches", breach), ("actions", action)]:
        key = f"{event['scope']}:{event['scope_id']}".encode()
        partition = next(m.partition for m in held[name] if m.key == key)
        producer.send(topics.names[name], key=key, value=json.dumps(event).encode(), partition=partition).get(timeout=60)
    producer.close()
    before = {name: read_topic(broker, topics.names[name]) for name in ["breaches", "actions"]}

    _, summary = kafka_run(riskflow, topics, out)
    new = {}
    for name in ["breaches", "actions"]:
        old = {(m.partition, m.offset) for m in before[name]}
        new[name] = [json.loads(m.value) for m in read_topic(broker, topics.names[name])
                     if (m.partition, m.offset) not in old]
    [fixed_limit], [fixed_scope] = new["breaches"], new["actions"]
    assert (fixed_limit["limit_id"], fixed_limit["prev_state"], fixed_limit["state"]) == (limit["id"], "BREACH", "OK")
    assert fixed_limit["ts"] == ts and fixed_limit["utilisation"] < limit.get("warn_at", 0.8)
    assert (fixed_scope["scope_id"], fixed_scope["prev_state"], fixed_scope["state"]) == \
        (scope["scope_id"], "REDUCING", "ACTIVE")
    assert fixed_scope["ts"] == ts and fixed_scope["limit_id"] == scope["id"]
    assert summary["kafka"]["outputs"]["corrected"] == 2
    assert_outputs_match_replay(broker, topics, replay)


def test_poisoned_topics_are_dead_lettered_and_the_run_goes_on(broker, riskflow, replay, tmp_path):
    topics = Topics(broker, tmp_path, "e")
    run(riskflow, "produce", "--dataset", str(SAMPLE), "--config", str(topics.config), "-q")
    ts = replay["summary"]["as_of"] - 1
    poison = [
        ("market_data", b"SPX", b"\xff\xfe\x00 not json at all"),
        ("market_data", b"SPX", b'{"ts":"yesterday","instrument":"SPX","price":1}'),
        ("market_data", b"SPX", b'{"ts":%d,"instrument":"SPX","price":"NaN"}' % ts),
        ("position_deltas", b"ACC-0001", b'{"id":"P-1","ts":%d,"account":"ACC-0001","instrument":"NOPE","qty":1}' % ts),
        ("instruments", b"X", b'{"id":"X","asset_class":"bond","currency":"USD","multiplier":1}'),
        ("limits", b"L", b'[1, 2, 3]'),
    ]
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    sent = []
    for name, key, value in poison:
        meta = producer.send(topics.names[name], key=key, value=value).get(timeout=60)
        sent.append((meta.topic, meta.partition, meta.offset, value))
    producer.close()

    _, summary = kafka_run(riskflow, topics, tmp_path / "out")
    assert summary["dead_letters"] == len(replay["letters"]) + len(poison)
    assert tables(tmp_path / "out") == replay["tables"], "the good records are all applied"
    letters = [json.loads(m.value) for m in read_topic(broker, topics.names["dead_letter"])]
    assert len(letters) == summary["dead_letters"]
    by_position = {(l["topic"], l["partition"], l["offset"]): l for l in letters}
    for topic, partition, offset, value in sent:
        letter = by_position[(topic, partition, offset)]
        assert letter["source"] == "kafka" and letter["reason"]
        if letter["reason"].startswith("unknown instrument"):
            assert json.loads(letter["payload"])["id"] == "P-1"  # held, re-encoded at the end
        else:
            assert letter["payload"] == value.decode("utf-8", errors="replace")
    reasons = {(t, o): by_position[(t, p, o)]["reason"] for t, p, o, _ in sent}
    assert reasons[(sent[0][0], sent[0][2])].startswith("invalid JSON record")
    assert "invalid type" in reasons[(sent[1][0], sent[1][2])]
    assert reasons[(sent[3][0], sent[3][2])] == "unknown instrument NOPE"
    # The sample's own bad lines are there too, pointing at their messages.
    replay_reasons = sorted(l["reason"] for l in replay["letters"])
    kafka_reasons = sorted(l["reason"] for l in letters if (l["topic"], l["partition"], l["offset"])
                           not in {(t, p, o) for t, p, o, _ in sent})
    assert kafka_reasons == replay_reasons


def test_missing_topics_are_an_error_naming_them(broker, riskflow, tmp_path):
    cfg = tmp_path / "missing.toml"
    cfg.write_text('[kafka]\ntimeout = "5s"\n[kafka.topics]\nmarket_data = "no-such-topic-%s"\n' % uuid.uuid4().hex)
    proc = run(riskflow, "run", "--kafka", BROKER, "--until-caught-up", "--config", str(cfg),
               "--out", str(tmp_path / "o"), "-q", check=False)
    assert proc.returncode != 0
    assert "no-such-topic" in proc.stderr
