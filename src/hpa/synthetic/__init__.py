"""Synthetic HPA images, the one home of everything about them (``hpa synth``, config key ``synthetic:``):
generation (generators, modes, samplers, quotas, manifest), judging (quality, filter, report, verdict,
figures) and ``hpa.synthetic.mixing``, which feeds them to classifier training. Entry points: ``load_synth_config``, ``hpa.synthetic.protocol`` (the
``Generator`` interface, the ``GENERATORS`` registry, ``train_generator`` / ``load_generator``),
``hpa.synthetic.modes.MODES``, ``hpa.synthetic.generate.generate``, ``read_manifest``, ``trained_on_folds``,
``hpa.synthetic.filter.filter_manifest``, ``hpa.synthetic.report.synth_report``. Heavy modules (diffusers,
peft) are imported only when used.
"""
from hpa.synthetic.config import SynthConfig, load_synth_config
from hpa.synthetic.manifest import COLUMNS, read_manifest, trained_on_folds

__all__ = ["COLUMNS", "SynthConfig", "load_synth_config", "read_manifest", "trained_on_folds"]
