"""Multipart uploads streamed straight to a temporary file, with the size limit enforced as bytes arrive.

FastAPI's `UploadFile` would spool the whole body before the handler runs, so an oversized upload
could only be refused after it had been received in full. Here python-multipart's push parser is fed
chunk by chunk: the file part goes to disk, the limit is checked on every chunk, and the temporary
file is removed on any failure (limit, bad form, client gone, cancellation).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mffmoe.server.errors import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
FORM_OVERHEAD = 1024 * 1024  # headers and text fields allowed on top of the file's own limit


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


class _FormReader:
    """python-multipart callbacks: text fields to memory, the one file field to a temporary file."""

    def __init__(self, file_field: str, max_bytes: int, upload_dir: Path) -> None:
        self.file_field = file_field
        self.max_bytes = max_bytes
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
            if len(self.fields) >= MAX_FIELDS:
                raise ApiError(400, "invalid_request", f"more than {MAX_FIELDS} form fields")
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
        fd, name = tempfile.mkstemp(prefix="mffmoe-upload-", suffix=".upload", dir=self.upload_dir)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise ApiError(413, "payload_too_large",
                               f"upload exceeds the limit of {self.max_bytes / 2**20:g} MB")
            self.pending.append(chunk)
        else:
            if len(self._data) + len(chunk) > MAX_FIELD_BYTES:
                raise ApiError(400, "invalid_request", f"form field {self._name!r} is too long")
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


async def receive_upload(request: Request, *, max_bytes: int, upload_dir: Path,
                         file_field: str = "media") -> Upload:
    """Stream a multipart form to disk. Raises ApiError 400/413; never leaves a file behind on error."""
    ctype = request.headers.get("content-type", "")
    kind, params = parse_options_header(ctype)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(400, "invalid_request", f"expected a multipart/form-data body with a {file_field!r} "
                                               f"file, got Content-Type {ctype or 'none'!r}")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
        raise ApiError(413, "payload_too_large", f"upload of {int(length) / 2**20:.1f} MB exceeds the limit "
                                                 f"of {max_bytes / 2**20:g} MB")
    reader = _FormReader(file_field, max_bytes, upload_dir)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if reader.pending:
                await anyio.to_thread.run_sync(reader.flush)
        parser.finalize()
        if reader.file is not None:
            reader.file.close()
        if not reader.ended and (reader.path is not None or reader.fields):
            raise ApiError(400, "invalid_request", "the multipart body ends before its closing boundary")
    except ClientDisconnect:
        reader.discard()
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    except FormParserError as e:
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
