"""Repeated n-gram rate of generations as an ``evaluate`` metric (logic: ``mygpt.text_metrics``)."""

import datasets
import evaluate

from mygpt.text_metrics import repeated_ngram_rate

_DESCRIPTION = """\
Repeated n-gram rate: the share of word n-gram occurrences that repeat an n-gram seen earlier in the same text
(summed over texts). It measures looping inside a generation ("degeneration"); overlap between different
texts is not counted (see distinct_n and self_bleu for that). Words come from the regular expression
\\w+|[^\\w\\s] (punctuation marks are words of their own, case is kept).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts.
    n (int or list of int): n-gram order(s), default 4.
Returns:
    repeated_<n>gram_rate (float) for each order: in [0, 1]; 0.0 when no text has n words.
Examples:
    >>> metric = evaluate.load("mygpt/metrics/repeated_ngram_rate")
    >>> metric.compute(predictions=["a b a b a"], n=2)
    {'repeated_2gram_rate': 0.5}
"""

_CITATION = """\
@inproceedings{welleck2020neural, title={Neural Text Generation with Unlikelihood Training},
  author={Welleck, Sean and Kulikov, Ilia and Roller, Stephen and Dinan, Emily and Cho, Kyunghyun and Weston, Jason},
  booktitle={ICLR}, year={2020}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RepeatedNgramRate(evaluate.Metric):
    """Share of repeated n-grams inside each of ``predictions``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, n=4):
        orders = [n] if isinstance(n, int) else list(n)
        return {f"repeated_{k}gram_rate": repeated_ngram_rate(list(predictions), k) for k in orders}
