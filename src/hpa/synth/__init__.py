"""Label-consistent synthetic HPA images from diffusion models, with provenance (``hpa synth``).

This package makes images (generators, modes, samplers, manifest, filter, report); ``hpa.mixing`` feeds
them to classifier training. Entry points: ``load_synth_config``, ``hpa.synth.protocol`` (the
``Generator`` interface, the ``GENERATORS`` registry, ``train_generator`` / ``load_generator``),
``hpa.synth.modes.MODES``, ``hpa.synth.generate.generate``, ``read_manifest``, ``trained_on_folds``,
``hpa.synth.filter.filter_manifest``, ``hpa.synth.report.synth_report``. Heavy modules (diffusers,
peft) are imported only when used.
"""
from hpa.synth.config import SynthConfig, load_synth_config
from hpa.synth.manifest import COLUMNS, read_manifest, trained_on_folds

__all__ = ["COLUMNS", "SynthConfig", "load_synth_config", "read_manifest", "trained_on_folds"]
