"""End-to-end latency of the streaming scorer: from a transaction produced to its decision
received, at a steady ``--rate`` (default 500 messages/s), against a floor measured in the same
run: the same messages echoed by a bare consumer-producer (no decoding, features or model).

Set-up (about a minute): five generated days are ingested and the model factory trains on
them in a throwaway ``MLOPS_HOME`` (``serve_bench.build_world``: champion = the XGBoost
candidate); a local KRaft broker and the local schema registry start, ``stream-setup`` makes
the topics. Then, each for ``--seconds`` (default 30):

* floor: a child process consumes the transactions topic and produces each message's bytes
  to an echo topic at once (librdkafka with ``linger.ms=0``: the transport's own latency);
* scorer: ``mlops-assets score-stream`` runs as in production (its own process, the
  prediction log on), deciding every transaction of the next day, sent in time order.

The load generator (this process) sends at the rate with Poisson arrivals and records when
each message left; a listener process consumes the output topic and records when each answer
arrived; latency = arrival - departure (one clock). Target (issue 13): p99 under 50 ms at 500
messages/s. Usage: ``.venv/bin/python bench/stream_score_bench.py [--rate 500] [--strict]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import DAY, build_world, percentiles  # noqa: E402

TARGET_P99_MS = 50.0


def listen(
    config: dict[str, Any], topic: str, key_field: str | None, wanted: int, out: str, seconds: float
) -> None:
    """Child process: record when each message of ``topic`` arrives (by its key)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **config,
            "group.id": f"listener-{topic}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    consumer.subscribe([topic])
    arrived: dict[str, tuple[float, float]] = {}  # key -> (received, the answer's own time)
    deadline = time.time() + seconds
    while len(arrived) < wanted and time.time() < deadline:
        # poll returns as soon as one message is there (consume would wait for a full batch)
        first = consumer.poll(0.05)
        messages = [first, *consumer.consume(num_messages=500, timeout=0)] if first else []
        now = time.time()
        for message in messages:
            if message.error() is None and message.key() is not None:
                arrived.setdefault(message.key().decode(), (now, message.timestamp()[1] / 1e3))
    consumer.close()
    Path(out).write_text(json.dumps(arrived))


def echo(config: dict[str, Any], source: str, target: str, seconds: float) -> None:
    """Child process: the floor, each message's bytes produced again at once (keyed by id)."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            **config,
            "group.id": "echo",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    producer = Producer({**config, "linger.ms": 0})
    consumer.subscribe([source])
    deadline = time.time() + seconds
    while time.time() < deadline:
        first = consumer.poll(0.05)
        messages = [first, *consumer.consume(num_messages=500, timeout=0)] if first else []
        for message in messages:
            if message.error() is None:
                headers = dict(message.headers() or [])
                producer.produce(target, value=message.value(), key=headers.get("id"))
        producer.poll(0)
    producer.flush(10)
    consumer.close()


def load(
    kafka: Any,
    registry: Any,
    records: list[dict[str, Any]],
    rate: float,
    seconds: float,
    warmup: float = 5.0,
) -> dict[str, float]:
    """Send records at ``rate``/s (Poisson arrivals) for ``warmup`` + ``seconds``; when each
    one of the last ``seconds`` left (the warm-up settles the producer's id, the groups and
    the caches, and is not measured)."""
    from mlops_assets.stream.setup import transaction_codec

    codec = transaction_codec(registry)
    writer = codec.register(f"{kafka.transactions_topic}-value")
    encode = codec.encoder(writer)
    producer = kafka.producer(**{"linger.ms": 0})
    rng = random.Random(13)
    departed: dict[str, float] = {}
    started = time.perf_counter()
    due = started
    for record in records:
        due += rng.expovariate(rate)
        if due - started > warmup + seconds:
            break
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        value = encode(record)
        transaction_id = record["transaction_id"]
        if due - started >= warmup:
            departed[transaction_id] = time.time()
        producer.produce(
            kafka.transactions_topic,
            value=value,
            key=record["nameOrig"].encode(),
            headers={"id": transaction_id.encode()},
        )
        producer.poll(0)
    producer.flush(30)
    return departed


def latencies(departed: dict[str, float], arrived_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per answered message: produced -> answer received, and produced -> answer produced
    (the answer's own Kafka time), in ms."""
    arrived = json.loads(arrived_file.read_text())
    missing = len(departed) - sum(1 for k in departed if k in arrived)
    if missing:
        print(f"  {missing} of {len(departed)} answers did not arrive in time")
    pairs = [(arrived[k], t) for k, t in departed.items() if k in arrived]
    slowest = sorted(pairs, key=lambda pair: pair[1] - pair[0][0])[:15]
    (arrived_file.parent / f"{arrived_file.stem}-slowest.txt").write_text(
        "\n".join(
            f"{time.strftime('%H:%M:%S', time.gmtime(sent))}.{int(sent % 1 * 1000):03d} "
            f"{(answer[0] - sent) * 1000.0:.1f} ms"
            for answer, sent in slowest
        )
    )
    received = np.asarray([(answer[0] - sent) * 1000.0 for answer, sent in pairs])
    answered = np.asarray([(answer[1] - sent) * 1000.0 for answer, sent in pairs])
    return received, answered


def next_day_records(rows: int) -> list[dict[str, Any]]:
    from mlops_assets.datagen import GeneratorConfig, generate_day
    from mlops_assets.settings import Settings

    day = DAY + timedelta(days=1)
    frame = generate_day(
        day, GeneratorConfig(rows_per_day=rows, seed=7, epoch=Settings().paysim_epoch)
    )
    frame = frame.with_columns(frame["timestamp"].dt.epoch("us").alias("timestamp"))
    return [
        {**row, "transaction_id": f"bench:{day}:{i}"}
        for i, row in enumerate(frame.iter_rows(named=True))
    ]


def measure(
    kind: str,
    kafka: Any,
    registry: Any,
    records: list[dict[str, Any]],
    args: Any,
    work: Path,
    output: str,
) -> tuple[np.ndarray, np.ndarray]:
    config = {"bootstrap.servers": kafka.bootstrap_servers}
    arrived = work / f"{kind}.json"
    wanted = int(args.rate * (args.seconds + 5) * 0.995)  # the warm-up's answers too
    listener = multiprocessing.get_context("spawn").Process(
        target=listen, args=(config, output, None, wanted, str(arrived), args.seconds + 45)
    )
    listener.start()
    time.sleep(3)  # the listener's group joined
    departed = load(kafka, registry, records, args.rate, args.seconds)
    listener.join(args.seconds + 60)
    return latencies(departed, arrived)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rows-per-day", type=int, default=5_000, help="training days' size")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream-score-bench-"))
    os.environ["MLOPS_HOME"] = str(work / "home")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mlops_assets.resources.kafka import KafkaCluster, SchemaRegistry
    from mlops_assets.settings import Settings
    from mlops_assets.stream.local_kafka import start_local_kafka
    from mlops_assets.stream.local_registry import start_local_registry
    from mlops_assets.stream.setup import setup_stream

    print("set-up: ingesting and training (about a minute)...", flush=True)
    build_world(work / "home", args.rows_per_day)
    settings = Settings()
    records = next_day_records(int(args.rate * (args.seconds + 5) * 2.5) + 1_000)
    broker = start_local_kafka(work / "kafka", settings.kafka_jars_dir)
    registry_server = start_local_registry(work / "registry", settings.schema_registry_dir)
    scorer = echoer = None
    try:
        kafka = KafkaCluster(bootstrap_servers=broker.bootstrap_servers)
        registry = SchemaRegistry(url=registry_server.url)
        setup_stream(kafka, registry)
        # the floor on topics of its own: the scorer then starts on an empty topic
        floor_kafka = kafka.model_copy(update={"transactions_topic": "floor-transactions"})
        kafka.ensure_topics(["echo", floor_kafka.transactions_topic])
        config = {"bootstrap.servers": kafka.bootstrap_servers}
        echoer = multiprocessing.get_context("spawn").Process(
            target=echo, args=(config, floor_kafka.transactions_topic, "echo", args.seconds + 60)
        )
        echoer.start()
        time.sleep(3)
        floor = measure("floor", floor_kafka, registry, records, args, work, "echo")
        echoer.terminate()
        env = {
            **os.environ,
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "MLOPS_SCHEMA_REGISTRY_URL": registry.url,
            "MLOPS_KAFKA_SCORER_GROUP": "bench-scorer",
        }
        log = open(work / "scorer.log", "wb")  # noqa: SIM115
        scorer = subprocess.Popen(
            [sys.executable, "-m", "mlops_assets.cli", "score-stream"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180  # the model and history loaded, the partitions assigned
        while time.time() < deadline and b"scoring" not in (work / "scorer.log").read_bytes():
            time.sleep(0.5)
        time.sleep(2)
        scored = measure(
            "scorer",
            kafka,
            registry,
            records[len(records) // 2 :],
            args,
            work,
            kafka.decisions_topic,
        )
    finally:
        for process in (scorer,):
            if process is not None:
                process.terminate()
                process.wait(30)
        if echoer is not None and echoer.is_alive():
            echoer.terminate()
        registry_server.stop()
        broker.stop()
    floor_p, scored_p = percentiles(floor[0]), percentiles(scored[0])
    decided_p = percentiles(scored[1])
    print(f"\nat {args.rate:g} messages/s for {args.seconds:g}s (Poisson arrivals):")
    print("                                  p50       p95       p99       max")
    for name, p in (
        ("floor (echo, no scoring)", floor_p),
        ("streaming scorer", scored_p),
        ("  of which to decision sent", decided_p),
    ):
        print(
            f"  {name:<28} {p['p50']:7.1f}ms {p['p95']:7.1f}ms {p['p99']:7.1f}ms {p['max']:7.1f}ms"
        )
    print(f"  answers: floor {len(floor[0])}, scorer {len(scored[0])}")
    print(
        f"  scorer p99 / floor p99: {scored_p['p99'] / floor_p['p99']:.1f}x; target p99 < "
        f"{TARGET_P99_MS:g} ms: {'met' if scored_p['p99'] < TARGET_P99_MS else 'missed'}"
    )
    print(f"  (scorer log: {work / 'scorer.log'})")
    met = scored_p["p99"] < TARGET_P99_MS
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
