"""A tiny `/favicon.ico` for the sandbox pages, made at import from code (no file, no CDN).

Browsers ask every origin for `/favicon.ico`; without one each stand-in page logged a 404. The
icon is a 32 x 32 PNG inside an ICO container (ICO may hold PNG images since Windows Vista; every
current browser reads it): a rounded square in the stand-in's own colour, so the tabs of the email
inbox, the sheet, the SNS inbox and the Stripe stand-in can be told apart.

Standard library only: the SendGrid and Sheets stand-ins run without Django.
"""

from __future__ import annotations

import functools
import struct
import zlib

CONTENT_TYPE = "image/x-icon"
SIZE = 32

# One colour per stand-in (RGB).
SENDGRID = (26, 130, 226)
SHEETS = (15, 157, 88)
AWS = (255, 153, 0)
STRIPE = (99, 91, 255)


def _png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A `size` x `size` RGBA PNG: a rounded square of `rgb` with a white bar across its middle."""
    radius = size // 5
    rows = []
    for y in range(size):
        row = bytearray([0])  # filter type 0 for this scanline
        for x in range(size):
            # Distance outside the rounded corners: transparent there.
            cx = min(max(x, radius), size - 1 - radius)
            cy = min(max(y, radius), size - 1 - radius)
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
            bar = size * 3 // 8 <= y < size * 5 // 8 and size // 4 <= x < size * 3 // 4
            if not inside:
                row += bytes((0, 0, 0, 0))
            elif bar:
                row += bytes((255, 255, 255, 255))
            else:
                row += bytes((*rgb, 255))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


@functools.cache
def favicon_ico(rgb: tuple[int, int, int]) -> bytes:
    """The ICO file: one 32 x 32 image, stored as PNG."""
    png = _png(SIZE, rgb)
    directory = struct.pack("<HHH", 0, 1, 1)  # reserved, type 1 (icon), one image
    entry = struct.pack("<BBBBHHII", SIZE, SIZE, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png
