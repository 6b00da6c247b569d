"""Koch et al.'s (2015) random affine distortions, applied to a batch on its own device.

Each part (rotation, shear, scale, translation) is switched on with probability 0.5 per
image, as in the paper; ranges are the paper's: rotation within +-10 degrees, shear +-0.3,
scale 0.8-1.2, translation +-2 pixels of the 105-pixel original (scaled for smaller inputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(images: torch.Tensor, generator: torch.Generator, rotation_degrees: float = 10.0,
                  shear: float = 0.3, scale: tuple[float, float] = (0.8, 1.2),
                  translate_pixels: float = 2.0, probability: float = 0.5) -> torch.Tensor:
    """images (B, 1, H, W) float -> distorted images, same shape."""
    batch, device = images.shape[0], images.device

    def uniform(low, high):
        return torch.rand(batch, device=device, generator=generator) * (high - low) + low

    def switched_on():
        return (torch.rand(batch, device=device, generator=generator) < probability).float()

    theta = switched_on() * uniform(-rotation_degrees, rotation_degrees) * math.pi / 180
    shear_x, shear_y = switched_on() * uniform(-shear, shear), switched_on() * uniform(-shear, shear)
    on = switched_on()  # one switch for both scale factors, as for the other parts
    scale_x = 1 + on * (uniform(*scale) - 1)
    scale_y = 1 + on * (uniform(*scale) - 1)
    on = switched_on()
    # affine_grid works in [-1, 1] coordinates: a pixel of the 105-pixel original is 2/105.
    shift_x = on * uniform(-translate_pixels, translate_pixels) * 2 / 105
    shift_y = on * uniform(-translate_pixels, translate_pixels) * 2 / 105
    cos, sin = torch.cos(theta), torch.sin(theta)
    # Rotation, then shear and scale, as one 2x3 matrix per image (maps output to input).
    matrix = torch.stack([
        torch.stack([scale_x * cos + shear_x * sin, -scale_x * sin + shear_x * cos, shift_x], 1),
        torch.stack([scale_y * sin + shear_y * cos, scale_y * cos - shear_y * sin, shift_y], 1),
    ], 1)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
