"""Multipart uploads streamed straight to a temporary file, with every limit enforced as bytes arrive.

FastAPI's `UploadFile` would spool the whole body before the handler runs, so an oversized upload
could only be refused after it had been received in full. Here python-multipart's push parser is fed
chunk by chunk: the file part goes to disk, the limits (file, whole body, form fields, time) are checked
on every chunk, and the temporary file is removed on any failure (limit, bad form, client gone,
cancellation).

A refused body is read on and thrown away up to `UploadLimits.drain_bytes` before the answer goes out:
a client that writes its whole body before reading (urllib, axios with form-data) then gets the answer
instead of a connection reset. A longer body is cut: the answer carries `Connection: close`. A client
that sent `Expect: 100-continue` and is refused before its body was asked for is answered at once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from mffmoe.server.errors import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("mffmoe.server")

#: Upload files are named `mffmoe-upload-<pid>-<random>.upload`: start-up removes those of dead processes only.
UPLOAD_PREFIX = "mffmoe-upload-"
UPLOAD_SUFFIX = ".upload"
_UPLOAD_NAME = re.compile(re.escape(UPLOAD_PREFIX) + r"(\d+)-[^/\\]+" + re.escape(UPLOAD_SUFFIX) + "$")
#: Room for part headers and boundaries, per part and for the whole body, on top of the data limits.
PART_OVERHEAD = 1024
BODY_OVERHEAD = 16 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may cost: sizes in bytes, times in seconds, `min_rate` in bytes/s (0: off)."""

    max_file_bytes: int
    max_fields: int = 16
    max_field_bytes: int = 4096
    drain_bytes: int = 8 * 2**20
    timeout_s: float = 900.0
    idle_timeout_s: float = 30.0
    min_rate: float = 16 * 1024
    grace_s: float = 10.0

    @property
    def max_body_bytes(self) -> int:
        """The whole body: the file, the text fields, and their headers and boundaries."""
        return (self.max_file_bytes + (self.max_fields + 1) * PART_OVERHEAD
                + self.max_fields * self.max_field_bytes + BODY_OVERHEAD)


@dataclass
class Upload:
    """A received form: the media file on disk (owned by whoever holds this) and the text fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def remove(self) -> None:
        """Delete the temporary file; safe to call more than once."""
        self.path.unlink(missing_ok=True)


def _mb(n: float) -> str:
    return f"{n / 2**20:.3g} MB"


class RequestBody:
    """The request body as it arrives, under the size and time limits.

    Chunks come from the ASGI `receive` directly (not `Request.stream()`, which can be read only once)
    so that what is left of a refused body can still be drained. Each wait for the next chunk ends at
    the earliest of: the idle timeout after the last chunk, the total timeout, and (after the grace
    period) the moment the average rate falls below the minimum; a slow client gets 408.
    """

    def __init__(self, request: Request, limits: UploadLimits) -> None:
        self._receive: Callable[[], Awaitable[Any]] = request.receive
        self.limits = limits
        length = request.headers.get("content-length", "")
        self.declared = int(length) if length.isdigit() else None
        self.received = 0
        self.started = self.last = time.monotonic()
        self.complete = False      # the last chunk has arrived
        self.broken = False        # the client left or was too slow: nothing more will be read
        # A client that sent `Expect: 100-continue` waits for an answer before sending the body; uvicorn
        # says "continue" on the first read, so until then a refusal needs no draining.
        self.waiting = request.headers.get("expect", "").lower() == "100-continue"

    def _deadline(self) -> tuple[float, str]:
        lim = self.limits
        ends = [(self.last + lim.idle_timeout_s, f"no data for {lim.idle_timeout_s:g} s"),
                (self.started + lim.timeout_s, f"the upload took longer than {lim.timeout_s:g} s")]
        if lim.min_rate > 0:
            ends.append((self.started + max(lim.grace_s, self.received / lim.min_rate),
                         f"the upload is slower than {lim.min_rate / 1024:g} KB/s"))
        return min(ends)

    async def next(self) -> bytes:
        """The next chunk (b"" once complete). Raises ApiError 408 (too slow) or 400 (client gone)."""
        if self.complete:
            return b""
        self.waiting = False
        deadline, why = self._deadline()
        message = None
        with anyio.move_on_after(deadline - time.monotonic()):
            message = await self._receive()
        if message is None:
            self.broken = True
            raise ApiError(408, "upload_timeout", f"{why}; send the body faster",
                           headers={"Connection": "close"})
        if message["type"] == "http.disconnect":
            self.broken = True
            raise ApiError(400, "client_disconnected", "the client went away during the upload")
        chunk: bytes = message.get("body", b"")
        self.complete = not message.get("more_body", False)
        self.received += len(chunk)
        if chunk:
            self.last = time.monotonic()
        return chunk

    def check_size(self) -> None:
        """Raise 413 once the body has grown past the limit (checked after each chunk is parsed, so a
        chunk that breaks a finer limit of the form is answered by that one)."""
        if self.received > self.limits.max_body_bytes:
            raise ApiError(413, "payload_too_large", f"the request body exceeds "
                                                     f"{_mb(self.limits.max_body_bytes)}")

    async def settle(self, error: ApiError) -> ApiError:
        """Before answering `error`: read and discard the rest of the body, up to `drain_bytes`, so the
        client gets the answer; past that (or when the client is broken) the connection is closed."""
        budget = self.limits.drain_bytes
        readable = not (self.complete or self.broken or self.waiting)
        if readable and (self.declared is None or self.declared - self.received <= budget):
            stop = self.received + budget
            with contextlib.suppress(ApiError):  # too slow or gone: stop here
                while not self.complete and self.received <= stop:
                    await self.next()
        if not self.complete:
            error.headers["Connection"] = "close"
        return error


class _FormReader:
    """python-multipart callbacks: text fields to memory, the one file field to a temporary file."""

    def __init__(self, file_field: str, limits: UploadLimits, upload_dir: Path) -> None:
        self.file_field = file_field
        self.limits = limits
        self.upload_dir = upload_dir
        self.fields: dict[str, str] = {}
        self.file: BinaryIO | None = None
        self.path: Path | None = None
        self.filename = ""
        self.size = 0
        self.pending: list[bytes] = []  # file bytes parsed but not yet written (written off the loop)
        self.ended = False              # the closing boundary was seen
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._data = bytearray()

    # -- parser callbacks ------------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file = b"", "", False
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "invalid_request", "a form part has no name")
        self._name = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options
        if not self._is_file:
            if self._name in self.fields:
                raise ApiError(400, "invalid_request", f"form field {self._name!r} is given more than once")
            if len(self.fields) >= self.limits.max_fields:
                raise ApiError(400, "invalid_request", f"more than {self.limits.max_fields} form fields")
            self.fields[self._name] = ""  # taken: a repeat is refused even before this part ends
            return
        if self._name != self.file_field:
            raise ApiError(400, "invalid_request",
                           f"unexpected file field {self._name!r}; send the media as {self.file_field!r}")
        if self.file is not None:
            raise ApiError(400, "invalid_request", f"more than one {self.file_field!r} file")
        self.filename = options[b"filename"].decode("utf-8", "replace")
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        # No extension from the client: FFmpeg would take it as a format hint (a text file named
        # .jpg opens as an image sequence); the type must come from the content alone.
        fd, name = tempfile.mkstemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-", suffix=UPLOAD_SUFFIX,
                                    dir=self.upload_dir)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.size += len(chunk)
            if self.size > self.limits.max_file_bytes:
                raise ApiError(413, "payload_too_large",
                               f"upload exceeds the limit of {self.limits.max_file_bytes / 2**20:g} MB")
            self.pending.append(chunk)
        else:
            if len(self._data) + len(chunk) > self.limits.max_field_bytes:
                raise ApiError(400, "invalid_request", f"form field {self._name!r} is longer than "
                                                       f"{self.limits.max_field_bytes} bytes")
            self._data.extend(chunk)

    def on_part_end(self) -> None:
        if not self._is_file:
            self.fields[self._name] = self._data.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_end": self.on_end}

    # -- file handling ---------------------------------------------------------------------------
    def flush(self) -> None:
        if self.file is not None and self.pending:
            self.file.write(b"".join(self.pending))
        self.pending.clear()

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(body: RequestBody, content_type: str, *, upload_dir: Path,
                         file_field: str = "media") -> Upload:
    """Stream a multipart form to disk. Raises ApiError 400/408/413; never leaves a file behind on error.
    The caller answers errors through `body.settle`."""
    limits = body.limits
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, "invalid_request", f"expected a multipart/form-data body with a {file_field!r} "
                                               f"file, got Content-Type {content_type or 'none'!r}")
    if body.declared is not None and body.declared > limits.max_body_bytes:
        raise ApiError(413, "payload_too_large", f"upload of {_mb(body.declared)} exceeds the limit "
                                                 f"of {limits.max_file_bytes / 2**20:g} MB")
    reader = _FormReader(file_field, limits, upload_dir)
    try:
        parser = MultipartParser(params[b"boundary"], reader.callbacks())
        while not body.complete:
            parser.write(await body.next())
            body.check_size()
            if reader.pending:
                await anyio.to_thread.run_sync(reader.flush)
        parser.finalize()
        if reader.file is not None:
            reader.file.close()
        if not reader.ended and (reader.path is not None or reader.fields):
            raise ApiError(400, "invalid_request", "the multipart body ends before its closing boundary")
    except FormParserError as e:  # also a boundary python-multipart refuses (too long)
        reader.discard()
        raise ApiError(400, "invalid_request", f"malformed multipart body ({e})") from None
    except BaseException:
        reader.discard()
        raise
    if reader.path is None:
        raise ApiError(400, "missing_file", f"no {file_field!r} file in the form")
    upload = Upload(reader.path, reader.filename, reader.size, reader.fields)
    if upload.size == 0:
        upload.remove()
        raise ApiError(400, "empty_file", f"{upload.filename or 'the upload'}: the file is empty")
    return upload


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # no permission (another user's process) or no such call: assume it lives
        return True
    return True


def remove_stale_uploads(upload_dir: Path) -> int:
    """Delete upload files left by server processes that no longer run (killed before their clean-up);
    returns how many. Only this server's own names are touched, never another program's files."""
    if not upload_dir.is_dir():
        return 0
    removed = 0
    for path in upload_dir.glob(f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}"):
        match = _UPLOAD_NAME.match(path.name)
        if match is None or int(match[1]) == os.getpid() or _pid_alive(int(match[1])):
            continue
        try:
            path.unlink()
            removed += 1
        except OSError as e:
            log.warning("could not remove stale upload %s: %s", path, e)
    return removed
