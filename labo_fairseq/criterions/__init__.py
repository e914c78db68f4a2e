"""fairseq criteria provided by the plugin; importing this package registers them."""
from labo_fairseq.criterions.labo_label_smoothed_cross_entropy import (  # noqa: F401
    LaboLabelSmoothedCrossEntropyCriterion,
    LaboLabelSmoothedCrossEntropyCriterionConfig,
)
