"""The `gs3 pretrain`, `gs3 finetune`, `gs3 evaluate`, `gs3 render` and `gs3 export` subcommands (dispatched
by gs3.cli)."""
