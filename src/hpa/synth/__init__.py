"""Label-consistent synthetic HPA images from diffusion models, with provenance (``hpa synth``).

Public entry points: ``load_synth_config``, ``train_generator``, ``load_generator``, ``generate``,
``read_manifest``, ``trained_on_folds``, ``filter_manifest``, ``synth_report``.
"""
from hpa.synth.config import SynthConfig, load_synth_config
from hpa.synth.manifest import COLUMNS, read_manifest, trained_on_folds

__all__ = ["COLUMNS", "SynthConfig", "load_synth_config", "read_manifest", "trained_on_folds"]
