"""Downloads of stored files (checkpoints, scoring results), streamed from storage as they are read:
neither the API's memory nor its disk holds a whole file."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from fastapi.responses import StreamingResponse


def download(size: int, chunks: Iterator[bytes], media_type: str, filename: str) -> StreamingResponse:
    """An attachment of `size` bytes named `filename`, sent chunk by chunk."""
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename*=utf-8''{quote(filename)}"
        if filename != quote(filename)
        else f'attachment; filename="{filename}"',
    }
    return StreamingResponse(chunks, media_type=media_type, headers=headers)
