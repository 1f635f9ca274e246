"""``mygpt-push`` (``python push_to_hub.py``): publish a finished model folder on the Hugging Face Hub.

    mygpt-push --model runs/cpu-quick --repo_id you/mygpt-shakespeare --dry_run   # what would go up
    mygpt-push --model runs/cpu-quick --repo_id you/mygpt-shakespeare --private

Uploads, in one commit: the safetensors weights, config.json with its auto_map and the remote code it needs
(configuration_mygpt.py, modeling_mygpt.py, generation_mygpt.py), the tokenizer, generation_config.json, the model
card README.md, and the run's reports (loss_curve.png, samples.md, run_summary.json, training logs). Checkpoints,
optimizer/scheduler/RNG states, pickles, markers and hidden files stay home; ``--dry_run`` prints the exact list
with sizes and what is left out, and needs neither a token nor a network (the repository id is checked all the
same).

The token is the one ``huggingface_hub`` finds: the ``HF_TOKEN`` environment variable or ``hf auth login``'s
stored token. It is never read from the command line and never printed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from mygpt.cli import main_guard, parse, setup_logging
from mygpt.hub import HubError, check_repo_id, format_plan, human_size, plan_upload, push_model_folder, resolve_token


@dataclass
class PushArguments:
    """The options of ``mygpt-push``."""

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


TOKEN_FLAGS = ("--token", "--hf_token", "--use_auth_token")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg.split("=", 1)[0] in TOKEN_FLAGS for arg in argv):  # refused before parsing, which would echo it
        print("error: tokens are not accepted on the command line (shell histories and process lists keep them): "
              "set HF_TOKEN in the environment or log in once with `hf auth login`", file=sys.stderr)
        raise SystemExit(2)
    setup_logging()
    with main_guard(HubError):
        (args,) = parse([PushArguments], argv, prog="mygpt-push", description=__doc__.split("\n\n")[0])
        check_repo_id(args.repo_id)
        plan = plan_upload(args.model)
        print(format_plan(plan))
        if args.dry_run:
            print(f"dry run: nothing uploaded (would go to {args.repo_id}{', private' if args.private else ''})")
            return 0
        commit = push_model_folder(plan, args.repo_id, token=resolve_token(), private=args.private,
                                   commit_message=args.commit_message)
    print(f"uploaded {len(plan.files)} files ({human_size(plan.total_size)}) to {commit.repo_url}: {commit.commit_url}")
    return 0
