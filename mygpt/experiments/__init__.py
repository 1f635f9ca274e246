"""Experiments: named studies of many training runs, and one report that compares them.

* :mod:`~mygpt.experiments.study` — a study file (YAML): a base preset and a list of named runs, each a set of
  ``train_hf.py`` overrides; read and checked up front.
* :mod:`~mygpt.experiments.runner` — trains each run as a normal ``train_hf.py`` run in ``DIR/runs/<name>``,
  skipping finished runs (a stopped study resumes), then writes ``DIR/report/``.
* :mod:`~mygpt.experiments.scaling`, :mod:`~mygpt.experiments.ablation`,
  :mod:`~mygpt.experiments.extrapolation` — what each kind of study finds in its runs.
* :mod:`~mygpt.experiments.report` — ``report.json``, ``report.csv``, ``report.md`` and the plots.

The command line is ``python experiments.py STUDY --output_dir DIR`` (``mygpt-experiments``).
"""
