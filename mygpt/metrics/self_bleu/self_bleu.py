"""Self-BLEU of a set of generations, as an ``evaluate`` metric (logic: ``mygpt.text_metrics.self_bleu``)."""

import datasets
import evaluate

from mygpt.text_metrics import self_bleu

_DESCRIPTION = """\
Self-BLEU (Zhu et al., 2018): the BLEU of each text against all the other texts as references, averaged.
1.0 when all texts are identical; lower means more diverse generations. Texts are split into words with the
regular expression \\w+|[^\\w\\s] (punctuation marks are words of their own, case is kept); BLEU uses uniform
weights up to max_n and add-one smoothing for orders >= 2 (Lin & Och, 2004; NLTK's method2).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): at least two texts, e.g. generations from shared prompts.
    max_n (int): highest n-gram order, default 4.
Returns:
    self_bleu (float): in [0, 1].
Examples:
    >>> metric = evaluate.load("mygpt/metrics/self_bleu")
    >>> metric.compute(predictions=["the cat sat", "the cat sat"])
    {'self_bleu': 1.0}
"""

_CITATION = """\
@inproceedings{zhu2018texygen, title={Texygen: A Benchmarking Platform for Text Generation Models},
  author={Zhu, Yaoming and Lu, Sidi and Zheng, Lei and Guo, Jiaxian and Zhang, Weinan and Wang, Jun and Yu, Yong},
  booktitle={SIGIR}, year={2018}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SelfBleu(evaluate.Metric):
    """Self-BLEU of ``predictions``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, max_n: int = 4):
        return {"self_bleu": self_bleu(list(predictions), max_n=max_n)}
