"""Real photographs that ship inside installed packages (no downloads, nothing drawn by us).

Two disjoint sets: ``EVALUATION`` (photos whose ImageNet class is known, used by the parity
reports, the tests and the GUI's examples) and ``CALIBRATION`` (used only to calibrate INT8, so
INT8 is never judged on the photos it was calibrated on).
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    relpath: str
    expected: tuple[str, ...] = ()  # acceptable top-1 ImageNet labels for a correct classifier

    @property
    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package} is not installed (it ships the photo {self.name})")
        return Path(list(spec.submodule_search_locations)[0]) / self.relpath

    def read(self) -> bytes:
        return self.path.read_bytes()


EVALUATION: tuple[Photo, ...] = (
    Photo("chelsea", "skimage", "data/chelsea.png", ("Egyptian cat", "tabby", "tiger cat")),
    Photo("coffee", "skimage", "data/coffee.png", ("espresso",)),
    Photo("rocket", "skimage", "data/rocket.jpg", ("missile", "projectile")),
    Photo("china", "sklearn", "datasets/images/china.jpg", ("palace",)),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", ("daisy",)),
    Photo("motorcycle", "skimage", "data/motorcycle_left.png", ("moped", "motor scooter")),
    Photo("cheetah", "gradio", "media_assets/images/cheetah.jpg", ("cheetah",)),
    Photo("lion", "gradio", "media_assets/images/lion.jpg", ("lion",)),
)

CALIBRATION: tuple[Photo, ...] = (
    Photo("astronaut", "skimage", "data/astronaut.png"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png"),
    Photo("hubble", "skimage", "data/hubble_deep_field.jpg"),
    Photo("retina", "skimage", "data/retina.jpg"),
    Photo("camera", "skimage", "data/camera.png"),
    Photo("coins", "skimage", "data/coins.png"),
    Photo("moon", "skimage", "data/moon.png"),
    Photo("ihc", "skimage", "data/ihc.png"),
    Photo("cell", "skimage", "data/cell.png"),
    Photo("color", "skimage", "data/color.png"),
    Photo("cheetah2", "gradio", "test_data/cheetah2.jpg"),
    Photo("groot", "gradio", "media_assets/images/groot.jpeg"),
    Photo("tower", "gradio", "media_assets/images/tower.jpg"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def by_name(name: str) -> Photo:
    for photo in EVALUATION + CALIBRATION:
        if photo.name == name:
            return photo
    raise KeyError(f"no sample photo named {name!r}; known: {', '.join(p.name for p in EVALUATION + CALIBRATION)}")


def available(photos: tuple[Photo, ...] = EVALUATION) -> list[Photo]:
    """The photos whose package is installed (gradio, for one, is not needed to export)."""
    out = []
    for photo in photos:
        try:
            if photo.path.is_file():
                out.append(photo)
        except FileNotFoundError:
            continue
    return out


# A phone photo is about 12 megapixels (4000x3000); the packages ship none that large.
PHONE_MEGAPIXELS = 12.0


@lru_cache(maxsize=16)
def upscaled_jpeg(photo: Photo, megapixels: float = PHONE_MEGAPIXELS, quality: int = 90) -> bytes:
    """``photo`` upscaled (bicubic) to about ``megapixels`` and encoded as a JPEG.

    The stand-in for a large phone photo in the parity report and the benchmark: its content is a
    real photo's, its size and format a phone's (upscaling makes it smoother than a real one).
    """
    from PIL import Image

    with Image.open(photo.path) as image:
        rgb = image.convert("RGB")
    scale = (megapixels * 1e6 / (rgb.width * rgb.height)) ** 0.5
    big = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
