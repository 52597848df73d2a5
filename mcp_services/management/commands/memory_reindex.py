"""`manage.py memory_reindex`: compute the memory items' missing or stale vectors, in batches."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from mcp_services.memory import embedding, pgvector, services


class Command(BaseCommand):
    help = (
        "Embed the memory items that have no vector of the configured model (stored before embeddings, "
        "while the endpoint failed, or by another model). Resumable: each batch is committed on its own, "
        "and a new run picks up what is left. Search finds unembedded items by keyword meanwhile."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Items embedded and committed at once.")
        parser.add_argument("--all", action="store_true", help="Recompute every vector, current ones too.")
        parser.add_argument(
            "--pgvector",
            action="store_true",
            help="PostgreSQL: add the pgvector column and HNSW index (pgvector installed after migrating), then --all.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        everything = options["all"]
        if options["pgvector"]:
            if not pgvector.install(connection):
                raise CommandError("pgvector is not available on this database (PostgreSQL with the vector extension)")
            everything = True
        embedder = embedding.get_embedder()
        if embedder is None:
            raise CommandError("embeddings are off (MEMORY_EMBEDDER=off): nothing to compute")
        stopping = []

        def stop(signum: int, frame: Any) -> None:
            stopping.append(signum)  # finish the batch in hand: its transaction commits or never started

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            total = services.memory_reindex_todo(everything=everything)
            self.stderr.write(f"memory_reindex: {total:,} item(s) to embed with {embedder.name}")
            done, after_id, started = 0, 0, time.monotonic()
            progress = Progress(total, stream=self.stderr)
            while not stopping:
                count, last_id = services.memory_items_reindex(
                    after_id=after_id, batch_size=options["batch_size"], everything=everything
                )
                if last_id is None:
                    break
                done, after_id = done + count, last_id
                progress.show(done, time.monotonic() - started)
            progress.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if stopping:
            self.stdout.write(f"stopped after {done:,} item(s); run memory_reindex again to finish")
            return
        self.stdout.write(f"embedded {done:,} item(s) with {embedder.name}")


class Progress:
    """A one-line bar on a terminal, a line per tenth of the work otherwise (logs stay readable)."""

    def __init__(self, total: int, *, stream: Any) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.reported = -1

    def show(self, done: int, elapsed: float) -> None:
        share = min(done / self.total, 1.0)
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{done:,}/{self.total:,} items ({share:.0%}, {rate:,.0f}/s)"
        if self.tty:
            bar = "#" * int(30 * share)
            self.stream.write(f"\r[{bar:<30}] {text}", ending="")
            self.stream.flush()
        elif int(share * 10) > self.reported:
            self.reported = int(share * 10)
            self.stream.write(f"memory_reindex: {text}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("")
