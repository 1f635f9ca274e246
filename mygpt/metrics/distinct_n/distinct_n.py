"""Distinct-n of a set of generations, as an ``evaluate`` metric (logic: ``mygpt.text_metrics.distinct_n``)."""

import datasets
import evaluate

from mygpt.text_metrics import distinct_n

_DESCRIPTION = """\
Distinct-n (Li et al., 2016): the number of unique word n-grams divided by the number of all word n-grams,
pooled over all texts (n-grams never cross from one text into the next). 1.0 means no n-gram repeats anywhere.
Words come from the regular expression \\w+|[^\\w\\s] (punctuation marks are words of their own, case is kept).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts.
    n (int or list of int): n-gram order(s), default [1, 2, 3].
Returns:
    distinct_<n> (float) for each order: in [0, 1]; 0.0 when no text has n words.
Examples:
    >>> metric = evaluate.load("mygpt/metrics/distinct_n")
    >>> metric.compute(predictions=["the cat sat on the mat"], n=[1, 2])
    {'distinct_1': 0.8333333333333334, 'distinct_2': 1.0}
"""

_CITATION = """\
@inproceedings{li2016diversity, title={A Diversity-Promoting Objective Function for Neural Conversation Models},
  author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill}, booktitle={NAACL},
  year={2016}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DistinctN(evaluate.Metric):
    """Distinct-n of ``predictions`` for one or several orders."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, n=(1, 2, 3)):
        orders = [n] if isinstance(n, int) else list(n)
        return {f"distinct_{k}": distinct_n(list(predictions), k) for k in orders}
