"""Training, evaluation and reproduction pipeline around fairseq for the LABO experiments.

The criterion lives in :mod:`labo_fairseq.criterions` and data preparation in
``scripts/prepare.sh``; this package turns a pair config (``configs/<pair>.yaml``) into
fairseq-train / fairseq-generate runs, scores them with sacreBLEU and aggregates the results.
Each module has one job: :mod:`.layout` (where files live), :mod:`.train`, :mod:`.launch`
(torchrun entry), :mod:`.averaging`, :mod:`.evaluate`, :mod:`.scoring`, :mod:`.report`,
:mod:`.plots` and :mod:`.reproduce`.
"""
