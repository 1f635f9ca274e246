"""``mygpt-analyze`` (``python analyze.py``): see what a trained MyGPT (or GPT-2) model has learned.

    mygpt-analyze --model runs/cpu-quick --text "ROMEO:\\nBut soft, what light..." --output_dir reports/analysis
    mygpt-analyze --model runs/cpu-quick --text_file scene.txt --eval_file heldout.txt --analyses heads lens
    mygpt-analyze analyze.yaml --seed 1        # options from a file, flags on top

Writes PNG figures, an offline attention viewer (attention.html), tables, summary.json and a README.md index
into --output_dir (replaced only once the new report is complete). The analyses are in mygpt/analysis/.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from mygpt.analysis.report import ANALYSES, DEFAULT_WORDS, run_analyses
from mygpt.cli import main_guard, parse, setup_logging
from mygpt.files import FolderLock
from mygpt.loading import load_model_and_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class AnalyzeArguments:
    """The options of ``mygpt-analyze``."""

    model: str = field(metadata={"help": "A save_pretrained folder (e.g. runs/cpu-quick) or, online, a Hub id."})
    text: str | None = field(default=None, metadata={
        "help": "The text to look at (attention, head scores, logit lens); at most the model's context. "
                "A typed \\n is read as a newline."})
    text_file: str | None = field(default=None, metadata={"help": "Read the text from this file instead."})
    output_dir: str = field(default="reports/analysis", metadata={"help": "Where the report goes (replaced)."})
    eval_file: str | None = field(default=None, metadata={
        "help": "Held-out text for head ablation losses, probes and token frequencies. Default: the validation "
                "split of the run that trained --model (rebuilt from its run_summary.json), else the text."})
    eval_max_tokens: int = field(default=8192, metadata={
        "help": "Use at most this many tokens of the evaluation text."})
    analyses: list[str] = field(default_factory=lambda: list(ANALYSES), metadata={
        "help": f"Which analyses to run, from: {' '.join(ANALYSES)}."})
    layers: list[int] | None = field(default=None, metadata={
        "help": "Layers drawn in the attention PNGs; all of them when not given."})
    words: list[str] = field(default_factory=lambda: list(DEFAULT_WORDS), metadata={
        "help": "Words whose nearest neighbours in the token embeddings are listed."})
    embedding_tokens: int = field(default=2000, metadata={"help": "At most this many tokens on the UMAP/t-SNE maps."})
    projections: list[str] = field(default_factory=lambda: ["umap", "tsne"], metadata={
        "help": "2-D projections of the token embeddings: umap, tsne."})
    seed: int = field(default=0, metadata={"help": "Seed for random sequences, projections and the control model."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available, else cpu), cpu, cuda, mps..."})

    def __post_init__(self) -> None:
        if (self.text is None) == (self.text_file is None):
            raise ValueError("give exactly one of --text and --text_file")


def _read(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def evaluation_text(args: AnalyzeArguments) -> tuple[str | None, str]:
    """The held-out text and where it came from: --eval_file, else the validation split of the training run
    in --model (so ablation losses are validation losses), else None (the analyses then use the text)."""
    if args.eval_file:
        return _read(args.eval_file, "--eval_file"), f"--eval_file {args.eval_file}"
    if os.path.isfile(os.path.join(args.model, "run_summary.json")):
        from mygpt.data import heldout_texts

        try:
            documents = heldout_texts(args.model, "validation")
        except (ValueError, FileNotFoundError, OSError) as err:
            logger.warning("cannot rebuild the validation split of %s (%s); using the text", args.model, err)
        else:
            return "\n\n".join(documents), f"the validation split of {args.model}"
    return None, "the text itself"


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    with main_guard():
        (args,) = parse([AnalyzeArguments], argv, prog="mygpt-analyze", description=__doc__.split("\n\n")[0])
        text = args.text if args.text is not None else _read(args.text_file, "--text_file")
        text = text.replace("\\n", "\n") if args.text is not None else text  # "--text 'A:\nB'" from a shell
        eval_text, eval_source = evaluation_text(args)
        model, tokenizer = load_model_and_tokenizer(args.model, device=args.device)
        with FolderLock(args.output_dir, purpose="mygpt-analyze"):  # one writer per report folder
            summary = run_analyses(
                model, tokenizer, text, args.output_dir, eval_text=eval_text, analyses=args.analyses,
                layers=args.layers, words=args.words, embedding_tokens=args.embedding_tokens,
                projections=args.projections, eval_max_tokens=args.eval_max_tokens, seed=args.seed,
                model_name=args.model, eval_source=eval_source,
            )
    print(f"wrote {sum(len(v) for v in summary['files'].values()) + 2} files to {args.output_dir}; "
          f"start with {os.path.join(args.output_dir, 'README.md')}")
    return 0
