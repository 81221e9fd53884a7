"""Draws a frame strip of one or more videos (one row each, every n-th frame), e.g. the README's picture of what
the main job makes with the built-in demo model:

    python scripts/make_video.py "a red circle moving right" --out red_circle.mp4
    python scripts/make_frame_strip.py red_circle.mp4 --out docs/images/demo_strip.png

The frames are read back from the files (as a user sees them) and enlarged without smoothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pack_loader import load_pack


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, nargs="+", help="video files, one row each")
    p.add_argument("--out", type=Path, required=True, help="the .png to write")
    p.add_argument("--every", type=int, default=2, help="take every n-th frame (default 2)")
    p.add_argument("--scale", type=int, default=2, help="enlarge each frame this many times (default 2)")
    p.add_argument("--labels", nargs="*", help="a caption per row (default: the file names)")
    args = p.parse_args(argv)
    load_pack()
    from PIL import Image, ImageDraw

    from cinematic.nodes.video_reader import read_video_frames

    rows = [read_video_frames(v)[::max(args.every, 1)] for v in args.videos]
    labels = args.labels or [v.name for v in args.videos]
    h, w = rows[0].shape[1] * args.scale, rows[0].shape[2] * args.scale
    gap, caption = 4, 18
    width = max(len(r) for r in rows) * (w + gap) + gap
    img = Image.new("RGB", (width, len(rows) * (h + caption + gap) + gap), (20, 22, 30))
    draw = ImageDraw.Draw(img)
    for r, (frames, label) in enumerate(zip(rows, labels)):
        y = gap + r * (h + caption + gap)
        draw.text((gap, y + 2), label, fill=(230, 232, 240))
        for i, frame in enumerate(frames):
            tile = Image.fromarray((frame * 255).round().byte().numpy()).resize((w, h), Image.NEAREST)
            img.paste(tile, (gap + i * (w + gap), y + caption))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print(f"wrote {args.out} ({img.width}x{img.height}, {len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
