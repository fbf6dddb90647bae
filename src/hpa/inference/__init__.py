"""Test-set inference, TTA, ensembling of runs and submission writing (``infer.py``, ``hpa infer``)."""
from hpa.inference.predict import checkpoint_paths, predict_images, predict_run, tta_views

__all__ = ["checkpoint_paths", "predict_images", "predict_run", "tta_views"]
