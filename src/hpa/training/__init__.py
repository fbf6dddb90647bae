"""K-fold training: ``run(cfg, folds, resume)`` trains the requested folds and writes ``runs/<exp>/``.

``checkpoint`` saves and loads resumable ``.pt`` files, ``loop`` trains one fold (through accelerate),
``run`` orchestrates folds, OOF merging, metrics and plots, ``cli`` is ``hpa train`` / ``train.py``.
"""
from hpa.training.run import run

__all__ = ["run"]
