#!/usr/bin/env python3
"""Writes the 8x8 handwritten digits as .npy files for examples/train_digits.rs.

Source: the copy of the UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin
and C. Kaynak, 1998; https://archive.ics.uci.edu/dataset/80) bundled with scikit-learn as
sklearn.datasets.load_digits(). Licence: Creative Commons Attribution 4.0 (CC BY 4.0), as the
UCI repository states for this data set.

Outputs (1,797 samples, in the bundled order):
  digits_images.npy  float32 [1797, 8, 8, 1]  pixel counts 0..16 scaled to [0, 1], NHWC
  digits_labels.npy  int32   [1797]           the digit, 0..9

Usage: pip install scikit-learn numpy && python3 examples/data/make_digits.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent

digits = load_digits()
images = (digits.images.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
labels = digits.target.astype(np.int32)
np.save(HERE / "digits_images.npy", images)
np.save(HERE / "digits_labels.npy", labels)
print(f"wrote {images.shape} images and {labels.shape} labels to {HERE}")
