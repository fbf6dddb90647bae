"""hpa: a k-fold training, thresholding, ensembling and diffusion-augmentation toolkit for the
Kaggle Human Protein Atlas Image Classification competition."""
from hpa.classes import CLASS_NAMES, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "NUM_CLASSES", "__version__"]
