"""See what a MyGPT (or GPT-2) model has learned: attention maps, head types, ablations, embeddings, logit lens
and probes. Each module has one job; ``analyze.py`` runs them all on a trained model and writes a report.

In a notebook::

    from mygpt.analysis import attention_for_text, head_view, head_scores, logit_lens
    head_view(model, tokenizer, "ROMEO:\\nBut soft, what light through yonder window breaks?\\n")
"""

from mygpt.loading import load_model_and_tokenizer  # the one loader, here for notebooks

from .ablation import ablate_heads, head_ablation, mean_loss
from .attention import attention_for_text, head_view, model_view, plot_attention_grid, plot_layer
from .core import eager_attention, encode
from .embeddings import nearest_neighbours, position_embedding_table, position_similarity, save_embedding_report
from .heads import (
    HEAD_TYPE_SENTENCES,
    duplicate_token_score,
    first_token_score,
    head_scores,
    induction_score,
    local_window_score,
    previous_token_score,
)
from .lens import lens_logits, logit_lens
from .probes import run_probes, speaker_line_spans, text_labels
from .report import ANALYSES, run_analyses
from .viewer import write_attention_html

__all__ = [
    "ANALYSES", "HEAD_TYPE_SENTENCES", "ablate_heads", "attention_for_text", "duplicate_token_score",
    "eager_attention", "encode", "first_token_score", "head_ablation", "head_scores", "head_view", "induction_score",
    "lens_logits", "load_model_and_tokenizer", "local_window_score", "logit_lens", "mean_loss", "model_view",
    "nearest_neighbours", "plot_attention_grid", "plot_layer", "position_embedding_table", "position_similarity",
    "previous_token_score", "run_analyses", "run_probes", "save_embedding_report", "speaker_line_spans",
    "text_labels", "write_attention_html",
]
