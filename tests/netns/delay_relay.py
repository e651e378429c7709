#!/usr/bin/env python3
"""A TCP relay that adds a fixed one-way delay to each direction (there is no netem here).

  delay_relay.py --listen HOST:PORT --to HOST:PORT --delay-ms 50 [--max-seconds S]

Every accepted connection gets its own connection to --to. Bytes keep their order: each chunk read
is stamped and written DELAY after it was read. When either side closes or fails, both connections
close (a killed master resets the worker's connection, as it would without the relay). Bounded:
at most --max-connections at once, at most --max-buffered-chunks chunks of 64 KiB in flight per
direction (reading stops while that many wait), and the relay exits after --max-seconds. SIGTERM
and SIGINT stop it. It prints "listening HOST:PORT" once it accepts connections.
"""
import argparse
import asyncio
import signal
import sys
import time

CHUNK = 65536


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def pump(reader, writer, delay, max_chunks):
    """Copies reader to writer, each chunk written `delay` seconds after it was read, in order."""
    queue = asyncio.Queue(max_chunks)

    async def read_side():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((time.monotonic() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((time.monotonic() + delay, None))

    async def write_side():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:  # the other side failed: tear the pair down
                raise ConnectionResetError("peer reset")
            if not data:  # EOF from the other side: pass the half-close on
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        reading.cancel()


class Relay:
    def __init__(self, args):
        self.args = args
        self.target = host_port(args.to)
        self.delay = args.delay_ms / 1000.0
        self.open = 0

    async def serve_one(self, c_reader, c_writer):
        if self.open >= self.args.max_connections:
            c_writer.close()
            return
        self.open += 1
        try:
            try:
                m_reader, m_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
            except (OSError, asyncio.TimeoutError):
                return  # the target is down: refuse this connection too
            up = asyncio.ensure_future(pump(c_reader, m_writer, self.delay, self.args.max_buffered_chunks))
            down = asyncio.ensure_future(pump(m_reader, c_writer, self.delay, self.args.max_buffered_chunks))
            try:
                # Half-closes are passed on; once one direction has failed or both are done, stop.
                done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
                if pending:
                    await asyncio.wait(pending)
            except (ConnectionError, OSError):
                pass
            finally:
                for t in (up, down):
                    t.cancel()
                m_writer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self.open -= 1
            c_writer.close()

    async def serve_connection(self, c_reader, c_writer):
        try:
            await self.serve_one(c_reader, c_writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            c_writer.close()

    async def run(self):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.call_later(self.args.max_seconds, stop.set)
        host, port = host_port(self.args.listen)
        server = await asyncio.start_server(self.serve_connection, host, port, reuse_address=True)
        print("listening", self.args.listen, flush=True)
        await stop.wait()
        server.close()
        await server.wait_closed()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to accept connections on")
    p.add_argument("--to", required=True, help="HOST:PORT to forward each connection to")
    p.add_argument("--delay-ms", type=float, default=50, help="one-way delay added to each direction")
    p.add_argument("--max-seconds", type=float, default=900, help="the relay exits after this long")
    p.add_argument("--max-connections", type=int, default=64)
    p.add_argument("--max-buffered-chunks", type=int, default=64, help="per direction, 64 KiB each")
    args = p.parse_args()
    asyncio.run(Relay(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
