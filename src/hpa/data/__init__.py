"""Data layer: labels, images (Kaggle PNG and HPAv18 JPEG), the pre-resized cache, datasets, folds,
and the synthetic demo dataset."""
