"""`mosis help TOPIC`: the documentation that ships inside the package.

Each topic is a text file in `topics/` (package data), so a developer who
installed the tool with pip has it; errors and hints point at `mosis help
TOPIC`, never at files that are not installed. The first line of a file is
its summary in `mosis help`.
"""

from __future__ import annotations

from importlib import resources

TOPICS = ("packaging", "validation", "uploads", "signing", "config", "exit-codes")


def topic_text(name: str) -> str:
    return resources.files(__package__).joinpath("topics", f"{name}.txt").read_text(encoding="utf-8")


def summary(name: str) -> str:
    return topic_text(name).partition("\n")[0].partition(": ")[2]
