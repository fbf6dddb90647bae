"""Test-set inference, TTA, ensembling of runs and submission writing (``infer.py``, ``hpa infer``).

``predict`` (TTA and fold averaging) and ``ensemble`` (blends) are the algorithms, ``stage`` reads and
writes run folders and submissions, ``cli`` is ``infer.py`` / ``hpa infer``.
"""
from hpa.inference.predict import predict_images, predict_run, tta_views

__all__ = ["predict_images", "predict_run", "tta_views"]
