"""See what a MyGPT (or GPT-2) model has learned: attention maps, head types, ablations, embeddings,
logit lens and probes. Each module has one job; ``analyze.py`` runs them all on a trained model."""
