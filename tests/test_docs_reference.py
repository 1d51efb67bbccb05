"""The command and configuration references in docs/ name every command, option and setting
the code has, so neither falls behind the other."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import BaseModel

from worker.cli import cli
from worker.config import BrokerSettings, Integration, Limits, VideoSettings, WorkerSettings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_command_reference_names_every_command_and_option() -> None:
    text = (DOCS / "commands.md").read_text()
    missing = []
    for name, command in cli.commands.items():
        if f"## `{name}" not in text:
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option):
                longest = max(param.opts, key=len)
                if f"`{longest}" not in text:
                    missing.append(f"{name} {longest}")
    assert missing == []


def test_the_configuration_reference_names_every_setting() -> None:
    text = (DOCS / "configuration.md").read_text()
    sections: dict[str, type[BaseModel]] = {
        "[integrations.NAME]": Integration,
        "[limits]": Limits,
        "[video]": VideoSettings,
        "[worker]": WorkerSettings,
        "[broker]": BrokerSettings,
    }
    missing = []
    for title, model in sections.items():
        assert f"## `{title}`" in text
        part = text.split(f"## `{title}`", 1)[1].split("\n## ", 1)[0]
        missing += [
            f"{title} {f}" for f in model.model_fields if f != "name" and f"`{f}`" not in part
        ]
    assert missing == []
