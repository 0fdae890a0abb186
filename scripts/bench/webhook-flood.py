#!/usr/bin/env python3
"""Floods a bg-agent `/webhook` on loopback with junk deliveries and samples its memory.

N connections each POST a body of SIZE bytes of junk under a well-formed but wrong
signature, written at RATE bytes/s per connection (so they are all in flight together: the
worst case for what the server holds before checking signatures), while the server's RSS is
sampled from /proc/PID/status. Bounded: N requests, each with a deadline.

Usage: webhook-flood.py PID URL   (N, SIZE, RATE, DEADLINE from the environment)
Prints one `RESULT key=value ...` line.
"""

import asyncio
import os
import sys
import time
import urllib.parse

N = int(os.environ.get("N", "64"))
SIZE = int(os.environ.get("SIZE", str(25 * 1024 * 1024)))
RATE = int(os.environ.get("RATE", str(8 * 1024 * 1024)))
DEADLINE = float(os.environ.get("DEADLINE", "60"))
CHUNK = 64 * 1024


def memory_kb(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


async def sample(pid, samples, stop):
    while not stop.is_set():
        samples.append(memory_kb(pid, "VmRSS"))
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass


async def deliver(host, port, n):
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        "POST /webhook HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "content-type: application/json\r\n"
        "x-github-event: issue_comment\r\n"
        f"x-github-delivery: flood-{os.getpid()}-{n}\r\n"
        f"x-hub-signature-256: sha256={'0' * 64}\r\n"
        f"content-length: {SIZE}\r\n"
        "connection: close\r\n\r\n"
    )
    writer.write(head.encode())
    # The server may answer (503, 413) before the whole body is sent: sending stops then.
    answer = asyncio.create_task(reader.readline())
    junk = b"x" * CHUNK
    sent, start = 0, time.monotonic()
    try:
        while sent < SIZE and not answer.done():
            part = junk[: min(CHUNK, SIZE - sent)]
            writer.write(part)
            await writer.drain()
            sent += len(part)
            ahead = sent / RATE - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        line = await answer
        return int(line.split()[1]) if line else "closed"
    except ConnectionError:
        # Answered early, the server closes a connection whose body it did not read; the
        # answer may still be readable.
        try:
            line = await asyncio.wait_for(answer, 1)
            return int(line.split()[1]) if line else "reset"
        except (ConnectionError, asyncio.TimeoutError, ValueError, IndexError):
            return "reset"
    finally:
        answer.cancel()
        writer.close()


async def main():
    pid, url = int(sys.argv[1]), urllib.parse.urlsplit(sys.argv[2])
    before = memory_kb(pid, "VmRSS")
    samples, stop = [], asyncio.Event()
    sampler = asyncio.create_task(sample(pid, samples, stop))
    started = time.monotonic()
    tasks = [
        asyncio.wait_for(deliver(url.hostname, url.port, n), DEADLINE) for n in range(N)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    await asyncio.sleep(2)
    after = memory_kb(pid, "VmRSS")
    hwm = memory_kb(pid, "VmHWM")
    counts = {}
    for result in results:
        key = type(result).__name__ if isinstance(result, BaseException) else str(result)
        counts[key] = counts.get(key, 0) + 1
    answers = ",".join(f"{k}:{v}" for k, v in sorted(counts.items()))
    print(
        f"RESULT rss_before_mb={before / 1024:.0f} rss_peak_mb={max(samples) / 1024:.0f} "
        f"rss_after_mb={after / 1024:.0f} hwm_mb={hwm / 1024:.0f} "
        f"seconds={elapsed:.1f} answers={answers}"
    )


asyncio.run(main())
