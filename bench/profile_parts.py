"""The core's py-spy profile of the input workload, summed by part of the input path.

    BENCH_PYSPY=var/bench/profile .venv/bin/python -m bench.hotpath --only input
    .venv/bin/python -m bench.profile_parts var/bench/profile/input.txt

Reads py-spy's raw (collapsed) output of `--gil` sampling and prints, for each part, its share of
the samples (a sample is counted in the first part, in the order below, whose frame is on its
stack), then the functions with the most samples of their own. Samples of a coroutine suspended
in C code (uvloop) can show a stale Python stack; they land in the Django handler's part.
"""

from __future__ import annotations

import argparse
import collections
import re

PARTS: list[tuple[str, str]] = [
    ("writer: webhooks receiver (deliveries_create)", "create_deliveries (webhooks/receivers.py"),
    ("writer: turns receiver", "(turns/receivers.py"),
    ("writer: memory outbox receiver", "(mcp_services/outbox/receivers.py"),
    ("writer: events receiver (events, sequences)", "on_messages_created (streaming/receivers.py"),
    ("writer: messages, idempotency (ORM)", "InputWriter._run"),
    ("writer: WAL checkpoint thread", "_Checkpointer._run"),
    ("loop: DRF serializer (validated)", "validated (common/web/views.py"),
    ("loop: DRF request parsing (request.data)", "Request.data (rest_framework/request.py"),
    ("loop: DRF initial (negotiation, permissions, throttles)", "APIView.initial"),
    ("loop: DRF response (finalize, render)", "finalize_response"),
    ("loop: DRF initialize_request", "initialize_request"),
    ("loop: authentication (JWT, user cache)", "aauthenticate"),
    ("loop: lean body (msgspec + checks)", "input_body_lean"),
    ("loop: throttle", "allow_request"),
    ("loop: lean response", "lean_response"),
    ("loop: awaiting / answering the writer", "(workspaces/writer.py"),
    ("loop: view, rest", "(workspaces/views.py"),
    ("loop: view, rest", "(common/web/views.py"),
    ("loop: Django handler, middleware, URL routing", "ApiASGIHandler"),
    ("loop: ASGI route: Django's request object (ASGIRequest)", "ASGIRequest.__init__"),
    ("loop: ASGI route: response headers (security, envelope)", "process_response"),
    ("loop: ASGI route: sending the response", "send_response"),
    ("loop: ASGI route: closing the response (request_finished)", "HttpResponseBase.close"),
    ("loop: ASGI route: the view object", "View.__init__"),
    ("loop: ASGI route, rest (LeanRoutes)", "LeanRoutes."),
    ("loop: channels router, request guard", "URLRouter.__call__"),
    ("loop: access log line", "(logging/"),
    ("loop: metrics, request id (ObservedApp)", "ObservedApp.__call__"),
    ("loop: uvicorn (HTTP parsing, sockets)", "uvicorn/protocols"),
    ("loop: event loop, other", "Runner.run"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    parts: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            part = next((name for name, frame in PARTS if frame in stack), "other threads")
            parts[part] += samples
            leaf = stack.rsplit(";", 1)[-1]
            own[re.sub(r"\(/\S*?/(site-packages/)?", "(", leaf)] += samples
    print(f"{total} samples\n\n| part | share |\n|---|---|")
    for name, samples in parts.most_common():
        print(f"| {name} | {100 * samples / max(1, total):.1f}% |")
    print("\n| own samples | function |\n|---|---|")
    for name, samples in own.most_common(args.top):
        print(f"| {100 * samples / max(1, total):.1f}% | `{name}` |")


if __name__ == "__main__":
    main()
