"""labo_fairseq: LABO label regularization as a fairseq ``--user-dir`` plugin.

Importing the package (which ``fairseq-train --user-dir labo_fairseq`` does) registers the
criterion ``labo_label_smoothed_cross_entropy`` and allowlists the argparse/omegaconf types
fairseq checkpoints hold, so torch >= 2.6's weights-only loading accepts them. The solver
(:mod:`labo_fairseq.solver`) and the loss (:mod:`labo_fairseq.loss`) need only PyTorch; the
fairseq glue is registered only where fairseq is installed.
"""
import importlib.util

if importlib.util.find_spec("fairseq") is not None:
    from labo_fairseq import checkpoint_compat as _checkpoint_compat
    from labo_fairseq import criterions as _criterions  # noqa: F401  (registers the criterion)

    _checkpoint_compat.allowlist_fairseq_checkpoint_types()
