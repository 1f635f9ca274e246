#!/usr/bin/env python3
"""Publish a finished model folder (a train_hf.py run, or any save_pretrained folder with a card) on the Hub.

    python push_to_hub.py --model runs/cpu-quick --repo_id you/mygpt-shakespeare --dry_run   # what would go up
    python push_to_hub.py --model runs/cpu-quick --repo_id you/mygpt-shakespeare --private

Uploads, in one commit: the safetensors weights, config.json with its auto_map and the remote code it needs
(configuration_mygpt.py, modeling_mygpt.py, generation_mygpt.py), the tokenizer, generation_config.json, the model
card README.md, and the run's reports (loss_curve.png, samples.md, run_summary.json, training logs). Checkpoints,
optimizer/scheduler/RNG states, pickles, markers and hidden files stay home; ``--dry_run`` prints the exact list
with sizes and what is left out, and needs neither a token nor a network.

The token is the one ``huggingface_hub`` finds: the ``HF_TOKEN`` environment variable or ``hf auth login``'s
stored token. It is never read from the command line and never printed.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from mygpt.hub import HubError, ModelFolderError, format_plan, human_size, plan_upload, push_model_folder, resolve_token


@dataclass
class PushArguments:
    """The command line of ``push_to_hub.py``."""

    model: str = field(metadata={"help": "The model folder: a finished train_hf.py run (has run_summary.json) or "
                                         "a save_pretrained folder with tokenizer and README.md model card."})
    repo_id: str = field(metadata={"help": "The Hub model repository, 'user/name' or 'organisation/name'; created "
                                           "if missing."})
    private: bool = field(default=False, metadata={
        "help": "Create the repository private (default: the account's default, public for personal accounts). "
                "Refused if the repository already exists and is public."})
    commit_message: str | None = field(default=None, metadata={
        "help": "The commit message (default: 'Upload <folder name> with push_to_hub.py')."})
    dry_run: bool = field(default=False, metadata={
        "help": "Check the folder and print exactly the files that would be uploaded, with sizes; upload nothing."})


def parse_arguments(argv: list[str]) -> PushArguments:
    """Parses ``argv``; a token on the command line is refused (without echoing it) rather than used."""
    parser = HfArgumentParser(PushArguments)
    if any(arg == "--token" or arg.startswith(("--token=", "--hf_token", "--use_auth_token")) for arg in argv):
        parser.error("tokens are not accepted on the command line (shell histories and process lists keep them): "
                     "set HF_TOKEN in the environment or log in once with `hf auth login`")
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plan = plan_upload(args.model)
        print(format_plan(plan))
        if args.dry_run:
            print(f"dry run: nothing uploaded (would go to {args.repo_id}"
                  f"{', private' if args.private else ''})")
            return 0
        token = resolve_token()
        commit = push_model_folder(plan, args.repo_id, token=token, private=args.private,
                                   commit_message=args.commit_message)
    except (ModelFolderError, HubError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"uploaded {len(plan.files)} files ({human_size(plan.total_size)}) to {commit.repo_url}: {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
