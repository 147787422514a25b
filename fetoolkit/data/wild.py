"""In-the-wild photos from the face_recognition 1.3.0 sdist (PyPI), and insightface 2.1's group photo:
full images for detection tests."""

from __future__ import annotations

from pathlib import Path

from fetoolkit.hub import fetch_tree

WILD_PACKAGE = "face_recognition==1.3.0"
WILD_MEMBER = "tests/test_images"
WILD_SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
#: The distinct full photos (obama_partial_face* and 32bit.png are copies), name -> identity.
WILD_IMAGES = {"obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "biden.jpg": "biden"}


def load_wild() -> dict[str, Path]:
    """Fetch (once) and return ``{file name: path}`` of the four distinct photos."""
    root = fetch_tree(WILD_PACKAGE, "pypi", WILD_MEMBER, "wild", WILD_SDIST_SHA256, sdist=True)
    paths = {name: root / name for name in WILD_IMAGES}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing} not found under {root}")
    return paths


GROUP_PACKAGE = "insightface==2.1"
GROUP_MEMBER = "insightface/data/images"
GROUP_WHEEL_SHA256 = "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399"
#: insightface's sample group photo: 1280x886, six people, all faces frontal to three-quarter.
GROUP_PHOTO = "t1.jpg"
GROUP_FACES = 6


def load_group_photo() -> Path:
    """Fetch (once) and return the path of insightface's 6-face group photo ``t1.jpg``."""
    root = fetch_tree(GROUP_PACKAGE, "pypi", GROUP_MEMBER, "group", GROUP_WHEEL_SHA256)
    path = root / GROUP_PHOTO
    if not path.is_file():
        raise FileNotFoundError(f"{GROUP_PHOTO} not found under {root}")
    return path
