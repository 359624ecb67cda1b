"""Image preprocessing, written once: training and serving both call :func:`preprocess`.

The spec is data (:class:`PreprocessSpec`) saved with every model, so a server reproduces the
exact input the model was trained on. Pillow + numpy only.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fpgaflow.fpga_runtime.errors import InvalidInput

# The original service: shortest side 256, centre crop 224, RGB mean subtraction.
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class PreprocessSpec(BaseModel):
    """How encoded image bytes become the featurizer's float input (HWC, float32)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resize: Literal["shortest_side", "stretch"] = Field(
        default="shortest_side",
        description="'shortest_side': scale the shortest side to resize_to, keep aspect, centre crop; "
        "'stretch': resize straight to crop x crop (SSD).",
    )
    resize_to: int = Field(default=256, ge=1, description="Target of the shortest side before cropping.")
    crop: int = Field(default=224, ge=1, description="Side of the square centre crop = model input size.")
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = Field(default=IMAGENET_RGB_MEAN, description="Per-channel mean, R, G, B.")
    std: tuple[float, float, float] = Field(default=(1.0, 1.0, 1.0), description="Per-channel divisor, R, G, B.")

    @model_validator(mode="after")
    def _crop_fits(self) -> PreprocessSpec:
        if self.resize == "shortest_side" and self.resize_to < self.crop:
            raise ValueError(f"resize_to ({self.resize_to}) must be at least crop ({self.crop})")
        return self

    @classmethod
    def for_input_size(cls, input_size: int, **overrides) -> PreprocessSpec:
        """The original 256→224 recipe scaled to another input size."""
        return cls(resize_to=round(input_size * 256 / 224), crop=input_size, **overrides)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode JPEG/PNG/BMP bytes to an RGB image, EXIF orientation applied.

    Refuses oversized images from the header alone, before decoding any pixels.
    """
    if not data:
        raise InvalidInput("empty image: 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInput(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image that needs no turning
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput(f"not a decodable image ({len(data)} bytes): expected JPEG, PNG or BMP") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidInput(f"image refused: {error}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidInput(f"corrupt or truncated image: {error}") from None
    return image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even an RGB image


def preprocess_image(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An RGB image → float32 array of shape (crop, crop, 3)."""
    if spec.resize == "stretch":
        image = image.resize((spec.crop, spec.crop), Image.Resampling.BILINEAR)
    else:
        width, height = image.size
        scale = spec.resize_to / min(width, height)
        new_size = (max(spec.crop, round(width * scale)), max(spec.crop, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BILINEAR)
        left = (new_size[0] - spec.crop) // 2
        top = (new_size[1] - spec.crop) // 2
        image = image.crop((left, top, left + spec.crop, top + spec.crop))
    pixels: np.ndarray = np.asarray(image, dtype=np.float32)
    pixels = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    if spec.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(pixels, dtype=np.float32)


def preprocess(data: bytes, spec: PreprocessSpec, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded image bytes → the model's float32 input (crop, crop, 3)."""
    return preprocess_image(decode_image(data, max_pixels), spec)
