"""Subcommands of the ``clip2scene`` CLI, one module each (see ``clip2scene_core/cli.py``)."""
