"""One small job through the local stack's Spark Connect server, right after `dev start` has started it: the
server's JVM then loads, links and compiles the paths a job takes before the first task needs them.

A fresh server answers its first job slowly even with the class-data archive (`mlopsctl.devenv.classarchive`,
which covers only the classes loaded at start): the first `preprocess_data` after a start spends several
times as long in Spark as the next one (docs/local-stack.md). The first query of a session builds the
server's shared state, plans and code-generates its first scans and aggregations, and opens the Parquet
reader and writer and the Arrow allocator.

So once `dev start` has seen the stack healthy, it runs this module in the background (``python -m
mlopsctl.devenv.sparkwarmup --remote sc://127.0.0.1:15002 --folder <state>/spark/warmup``): the same kinds of
operations on a small generated table (write Parquet, read it, one aggregation pass with medians, write it
again and collect it to pandas through Arrow), then it deletes the table. It leaves out ``mapInPandas``: each
Connect session's Python workers are its own, so no job could use workers started here. Nothing waits for it;
a task that starts meanwhile shares the server with it, and `dev stop` kills it. It gives up after
``--deadline`` seconds: a Connect client retries a server that does not answer for minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROWS = 2_000
COLUMNS = 10
DEADLINE = 300


def warm_up(remote: str, folder: Path) -> list[tuple[str, float]]:
    """Run the warm-up job against the Connect server at ``remote``, in ``folder`` (removed afterwards).
    Returns (step, seconds) for each step."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    steps: list[tuple[str, float]] = []
    started = time.monotonic()

    def step(name: str) -> None:
        nonlocal started
        now = time.monotonic()
        steps.append((name, now - started))
        started = now

    spark = SparkSession.builder.remote(remote).getOrCreate()
    step("session")
    try:
        table, features = str(folder / "table"), str(folder / "features")
        spark.range(ROWS).select(
            *[F.rand(seed=i).alias(f"x{i}") for i in range(COLUMNS)], F.col("id").cast("double").alias("y")
        ).write.mode("overwrite").parquet(table)
        step("write parquet")
        source = spark.read.parquet(table).withColumn("row", F.monotonically_increasing_id())
        source.agg(F.count(F.lit(1)), *[F.median(c) for c in source.columns]).collect()
        step("aggregate")
        source.coalesce(1).write.mode("overwrite").parquet(features)
        spark.read.parquet(features).toPandas()
        step("write and collect")
    finally:
        spark.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlopsctl.devenv.sparkwarmup", description=__doc__.splitlines()[0])
    parser.add_argument("--remote", required=True, help="the server's Spark Connect URL, sc://host:port")
    parser.add_argument("--folder", required=True, type=Path, help="where the job writes its table (removed after)")
    parser.add_argument("--deadline", type=int, default=DEADLINE, metavar="SECONDS",
                        help="give up after this long (default: %(default)s)")
    args = parser.parse_args(argv)

    def give_up(*_: object) -> None:
        shutil.rmtree(args.folder, ignore_errors=True)
        print(f"spark warm-up failed: no answer from {args.remote} within {args.deadline} s", file=sys.stderr,
              flush=True)
        os._exit(1)  # the client's threads may be inside a retry loop: leave without waiting for them

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.deadline)
    try:
        steps = warm_up(args.remote, args.folder)
    except Exception as exc:  # noqa: BLE001 - a warm-up that fails costs only the speed it would have bought
        print(f"spark warm-up failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print("spark warm-up: " + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in steps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
