"""The body of an ``http_get`` response: decoded within a byte limit, parsed, or saved.

Decoding counts bytes as they stream, so a gzip bomb fails early. Saving streams to a
temporary file beside the target through a worker thread (the event loop never waits on
the disk), renamed into place once complete and fsynced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wfe_daemon.errors import TaskFailed
from wfe_daemon.tasks._paths import AtomicFile
from wfe_daemon.tasks._threads import in_thread

if TYPE_CHECKING:
    import httpx

_DECODE_STEP: Final = 1024 * 1024
WRITE_BATCH_BYTES: Final = 1024 * 1024
"""Decoded bytes gathered before one trip to the writer thread."""


def _inflater(encoding: str, url: str, method: str = "GET") -> Any:
    """A zlib decompressor for the body's Content-Encoding; ``None`` for identity."""
    import zlib

    codings = [c.strip().lower() for c in encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise TaskFailed(f"{method} {url}: unsupported Content-Encoding {', '.join(codings)!r}")
    return zlib.decompressobj(zlib.MAX_WBITS | 16 if "gzip" in codings[0] else zlib.MAX_WBITS)


async def decoded(
    response: httpx.Response, encoding: str, limit: int, url: str, method: str = "GET"
) -> AsyncIterator[bytes]:
    """The body decoded, failing as soon as it passes ``limit``.

    ``encoding`` is the response's Content-Encoding (gzip, deflate or none). Decompression
    is bounded step by step (``max_length``), so a small compressed chunk never expands to
    more than ``limit + 1`` bytes in memory. Errors start with ``method`` and ``url``.
    """
    import zlib

    stream: AsyncIterator[bytes]
    if response.is_stream_consumed:  # a body given whole (mock transports): decoded already
        inflater, stream = None, _single(response.content)
    else:
        inflater, stream = _inflater(encoding, url, method), response.aiter_raw()
    total = 0
    first = "deflate" in encoding.lower()
    async for raw in stream:
        data = raw
        while data:
            if inflater is None:
                chunk, data = data, b""
            else:
                try:
                    chunk = inflater.decompress(data, min(limit - total + 1, _DECODE_STEP))
                except zlib.error as exc:
                    if first:  # some servers send deflate raw, without its zlib header
                        inflater, first = zlib.decompressobj(-zlib.MAX_WBITS), False
                        continue
                    raise TaskFailed(f"{method} {url}: body does not decompress: {exc}") from exc
                data = inflater.unconsumed_tail
            first = False
            total += len(chunk)
            if total > limit:
                raise TaskFailed(f"{method} {url}: body is over max_bytes ({limit} bytes)")
            if chunk:
                yield chunk


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


MISSING: Final = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
"""Built once: ``json.loads`` with a keyword builds a decoder per call."""


def json_or_missing(text: str, content_type: str) -> Any:
    """The body parsed as JSON when it is JSON (declared or not), else ``MISSING``."""
    stripped = text.lstrip()
    if "json" not in content_type.lower() and stripped[:1] not in ("{", "[", '"'):
        return MISSING
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):
        return MISSING


async def save(chunks: AsyncIterator[bytes], target: Path, name: str) -> int:
    """Stream ``chunks`` to ``target`` (``name`` as the user wrote it) atomically; return
    the bytes written.

    Chunks are gathered to about :data:`WRITE_BATCH_BYTES` and each batch is written by
    one worker-thread call; the fsync and rename run in a thread too. On any failure or
    cancellation the temporary file is removed and ``target`` is left as it was.
    """
    # mkdir and an empty temp file: too quick for a thread
    out = AtomicFile(target, "wb", name=name, param="save_to")
    size = pending = 0
    batch: list[bytes] = []
    try:
        async for chunk in chunks:
            batch.append(chunk)
            pending += len(chunk)
            if pending >= WRITE_BATCH_BYTES:
                await in_thread(out.write_all, batch)
                size, pending, batch = size + pending, 0, []
        if batch:
            await in_thread(out.write_all, batch)
            size += pending
        cancelled = threading.Event()
        await in_thread(out.publish, cancelled, cancelled=cancelled)
    except BaseException:
        out.discard()  # in_thread waited for the writer, so nothing writes to it now
        raise
    return size
