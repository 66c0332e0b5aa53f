"""Support benchmark: retrieval accuracy, abstention, and answer latency on web.

``python -m bench.support [--embedder auto|minilm|none] [--rounds N]``

Runs the real gateway (``gateway serve``, one uvicorn worker) in a separate
process on the shipped example clients (spa-del-sol, bright-smile-dental),
waits until their knowledge is ingested, then asks the labelled questions of
``tests/support/labelled_*.yaml`` over the web chat websocket, one fresh
conversation per question, ``--rounds`` times. It prints:

- **retrieval** top-1 / top-3: for the answerable knowledge questions, whether
  the index (``bench.knowledge.shipped_index``) ranks the expected file first /
  among the first three;
- **answers**: right (expected words + expected source), wrong, abstained;
- **abstention** precision (of the abstentions, how many should have been)
  and recall (of the questions that should be abstained on, how many were);
- **latency** question sent -> ``complete`` received, p50 / p95 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from websockets.asyncio.client import connect

from bench._server import HOST, ServerProcess, free_port, gateway_bench_env, gateway_serve_cmd
from bench.knowledge import shipped_index

REPO = Path(__file__).resolve().parents[1]
SETS = {
    "spa-del-sol": REPO / "tests" / "support" / "labelled_spa.yaml",
    "bright-smile-dental": REPO / "tests" / "support" / "labelled_dental.yaml",
}


class Server(ServerProcess):
    name = "server-support"
    poll_s = 0.2

    def __init__(self, workdir: Path, embedder: str) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        env = gateway_bench_env(workdir / "data")
        env["GATEWAY_EMBEDDER"] = embedder
        cmd = gateway_serve_cmd(port, REPO / "clients")
        super().__init__(workdir, cmd, env)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


async def ask(url: str, text: str) -> tuple[dict[str, Any], float]:
    """One question in a fresh web conversation: its ``complete`` event and the
    ms from sending it to receiving ``complete``."""
    async with connect(url, open_timeout=30) as ws:
        json.loads(await ws.recv())  # session
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "text": text, "id": "q"}))
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "complete":
                return event, (time.perf_counter() - started) * 1000
            if event["type"] == "error":
                raise RuntimeError(f"error event: {event}")


def verdict(item: dict[str, Any], event: dict[str, Any]) -> str:
    meta = event.get("metadata") or {}
    answered = meta.get("state") == "answered"
    if item.get("abstain"):
        return "abstain_ok" if not answered else "invented"
    if not answered:
        return "abstained"
    files = [s["file"] for s in meta.get("sources") or []]
    text = event["text"].lower()
    if all(str(w).lower() in text for w in item["expect"]) and files[:1] == [item["source"]]:
        return "right"
    return "wrong"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_ingested(url: str, question: str, timeout_s: float = 180) -> None:
    """Ask until the answer is no longer "still being loaded" (background ingest)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        event, _ = await ask(url, question)
        if (event.get("metadata") or {}).get("state") != "not_ready":
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("knowledge was not ready in time")


async def index_ranks(embedder: str, work: Path) -> tuple[int, int, int]:
    """Top-1 / top-3 of the index alone over the answerable knowledge questions."""
    index = await shipped_index(work / "index", embedder)
    top1 = top3 = total = 0
    try:
        for client, path in SETS.items():
            for item in yaml.safe_load(path.read_text(encoding="utf-8")):
                if item.get("abstain") or item.get("source") == "config":
                    continue
                total += 1
                files = [p.file for p in await index.search(client, item["q"], 3)]
                top1 += files[:1] == [item["source"]]
                top3 += item["source"] in files
    finally:
        await index.aclose()
    return top1, top3, total


async def run(embedder: str, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-support-") as tmp:
        work = Path(tmp)
        top1, top3, total = await index_ranks(embedder, work)
        server = Server(work, embedder)
        try:
            await asyncio.to_thread(server.wait_ready)
            base = server.url.replace("http://", "ws://")
            for client in SETS:
                await wait_ingested(f"{base}/web/chat/{client}", "do you have parking?")
            counts: dict[str, int] = {}
            latencies: list[float] = []
            for _ in range(rounds):
                for client, path in SETS.items():
                    url = f"{base}/web/chat/{client}"
                    for item in yaml.safe_load(path.read_text(encoding="utf-8")):
                        event, ms = await ask(url, item["q"])
                        latencies.append(ms)
                        v = verdict(item, event)
                        counts[v] = counts.get(v, 0) + 1
        finally:
            server.stop()
    answerable = counts.get("right", 0) + counts.get("wrong", 0) + counts.get("abstained", 0)
    should = counts.get("abstain_ok", 0) + counts.get("invented", 0)
    abstained = counts.get("abstain_ok", 0) + counts.get("abstained", 0)
    print(f"support bench: embedder={embedder}, {rounds} round(s), gateway in a separate process")
    print(
        f"  index retrieval (answerable knowledge questions): top-1 {top1}/{total}, top-3 {top3}/{total}"
    )
    print(
        f"  answers: right {counts.get('right', 0)}/{answerable}, wrong {counts.get('wrong', 0)},"
        f" abstained {counts.get('abstained', 0)}"
    )
    precision = counts.get("abstain_ok", 0) / abstained if abstained else 1.0
    recall = counts.get("abstain_ok", 0) / should if should else 1.0
    print(
        f"  abstention: precision {precision:.2f}, recall {recall:.2f}"
        f" (invented answers: {counts.get('invented', 0)} of {should})"
    )
    print(
        f"  latency question -> complete on web: p50 {pct(latencies, 0.5):.0f} ms,"
        f" p95 {pct(latencies, 0.95):.0f} ms ({len(latencies)} questions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="auto", help="auto | minilm | none")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args.embedder, args.rounds))


if __name__ == "__main__":
    main()
