#!/usr/bin/env python3
"""Draw the driftless app icon as RGBA PNGs (standard library only, no Pillow).

A rounded square in slate blue with two opposing arrows: CRM -> billing on top, billing -> CRM
below, the two directions driftless keeps in agreement. Run from anywhere:

    python3 src-tauri/icons/make_icons.py

and commit the PNGs it writes next to itself (tauri.conf.json lists them; Tauri requires
RGBA PNGs for the window icon).
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SS = 4  # supersampling per axis, for anti-aliased edges

BG_TOP = (40, 64, 112)
BG_BOTTOM = (22, 36, 68)
ARROW = (236, 244, 255)
ACCENT = (94, 234, 212)


def inside_rounded_square(x, y, r):
    """x, y in [0, 1]; r = corner radius."""
    cx = min(max(x, r), 1 - r)
    cy = min(max(y, r), 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def inside_arrow(x, y, y0, rightwards):
    """A horizontal arrow centred on y0: shaft from 0.24 to 0.76, head 0.14 long."""
    if not rightwards:
        x = 1 - x
    shaft_half = 0.045
    head_len, head_half = 0.16, 0.12
    tip = 0.78
    if 0.22 <= x <= tip - head_len and abs(y - y0) <= shaft_half:
        return True
    if tip - head_len <= x <= tip:
        return abs(y - y0) <= head_half * (tip - x) / head_len
    return False


def sample(x, y):
    """Colour (r, g, b, a) at a point of the unit square."""
    if not inside_rounded_square(x, y, 0.2):
        return (0, 0, 0, 0)
    if inside_arrow(x, y, 0.37, True):
        return ARROW + (255,)
    if inside_arrow(x, y, 0.63, False):
        return ACCENT + (255,)
    t = y
    return tuple(round(a + (b - a) * t) for a, b in zip(BG_TOP, BG_BOTTOM)) + (255,)


def render(size):
    rows = []
    n = size * SS
    for py in range(size):
        row = bytearray([0])  # PNG filter type 0
        for px in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(SS):
                for sx in range(SS):
                    r, g, b, a = sample((px * SS + sx + 0.5) / n, (py * SS + sy + 0.5) / n)
                    acc[0] += r * a
                    acc[1] += g * a
                    acc[2] += b * a
                    acc[3] += a
            alpha = acc[3]
            if alpha == 0:
                row += b"\x00\x00\x00\x00"
            else:
                row += bytes([round(acc[0] / alpha), round(acc[1] / alpha), round(acc[2] / alpha), round(alpha / SS / SS)])
        rows.append(bytes(row))
    return b"".join(rows)


def png(size, pixels):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(pixels, 9)) + chunk(b"IEND", b"")


def main():
    for name, size in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)]:
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(png(size, render(size)))
        print(f"wrote {name} ({size}x{size} RGBA)")


if __name__ == "__main__":
    main()
