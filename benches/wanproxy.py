#!/usr/bin/env python3
"""A TCP proxy that makes a loopback registry look like one across a WAN.

This kernel has no netem qdisc, so the link is modelled here: every piece of
data is delivered half the round-trip time after it was sent, in each
direction, and each direction is capped at a rate (a token bucket shared by
all connections, as one link would be). Counts the bytes sent to clients.

    wanproxy.py LISTEN_PORT UPSTREAM_PORT [--rtt-ms 20] [--mbit 100] [--stats FILE]

On SIGUSR1 (and at exit) it writes "bytes_to_client N" and
"connections N" to the stats file (default: stdout).
"""

import argparse
import asyncio
import signal
import sys
import time


class Link:
    """One direction of the modelled link: a rate cap shared by all
    connections."""

    def __init__(self, bytes_per_s):
        self.rate = bytes_per_s
        self.free_at = time.monotonic()

    def finish_time(self, n):
        """When n more bytes will have left the sender."""
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        return self.free_at


STATS = {"bytes_to_client": 0, "connections": 0}


async def pump(reader, writer, link, delay, count):
    # Pieces travel in order: each is delivered `delay` after it finished
    # leaving at the link's rate.
    queue = asyncio.Queue()

    async def deliver():
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            if count:
                STATS["bytes_to_client"] += len(data)
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            due = link.finish_time(len(data)) + delay
            await queue.put((due, data))
    except (ConnectionError, OSError):
        pass
    await queue.put(None)
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen", type=int)
    ap.add_argument("upstream", type=int)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--mbit", type=float, default=100.0)
    ap.add_argument("--stats")
    a = ap.parse_args()
    delay = a.rtt_ms / 2000.0
    up_link = Link(a.mbit * 1e6 / 8)
    down_link = Link(a.mbit * 1e6 / 8)

    async def handle(creader, cwriter):
        STATS["connections"] += 1
        # Connecting costs a round trip too.
        await asyncio.sleep(2 * delay)
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", a.upstream)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(
            pump(creader, uwriter, up_link, delay, False),
            pump(ureader, cwriter, down_link, delay, True),
        )
        for w in (cwriter, uwriter):
            try:
                w.close()
            except OSError:
                pass

    def dump(*_):
        text = "".join(f"{k} {v}\n" for k, v in STATS.items())
        if a.stats:
            with open(a.stats, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, dump)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await asyncio.start_server(handle, "127.0.0.1", a.listen)
    async with server:
        await stop.wait()
    dump()


if __name__ == "__main__":
    asyncio.run(main())
