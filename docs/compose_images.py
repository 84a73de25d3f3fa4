"""Compose the README's pictures from a ``gbi demo`` run: ``python docs/compose_images.py DIR``
(``DIR`` as given to ``gbi demo --out``) writes ``docs/img/demo.png`` (post-fit mass spectrum,
feature closure, CLs scan) and ``docs/img/demo_more.png`` (binned fit, profile likelihood,
background-generator training)."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PANELS = {
    "demo.png": ("postfit_mass.png", "closure_features.png", "cls_scan.png"),
    "demo_more.png": ("postfit_binned.png", "profile_scan.png", "training_background.png"),
}


def row(files: list[Path], height: int = 520) -> Image.Image:
    """The images side by side, each scaled to ``height`` pixels."""
    imgs = [Image.open(f).convert("RGB") for f in files]
    imgs = [im.resize((round(im.width * height / im.height), height), Image.LANCZOS) for im in imgs]
    out = Image.new("RGB", (sum(im.width for im in imgs), height), "white")
    x = 0
    for im in imgs:
        out.paste(im, (x, 0))
        x += im.width
    return out


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    result = Path(sys.argv[1]) / "result"
    target = Path(__file__).resolve().parent / "img"
    for name, parts in PANELS.items():
        files = [result / p for p in parts]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            sys.exit(f"missing {', '.join(missing)}: run `gbi demo --out {sys.argv[1]}` first")
        row(files).save(target / name, optimize=True)
        print(f"wrote {target / name}")


if __name__ == "__main__":
    main()
