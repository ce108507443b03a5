"""Print one of README.rst's Quick start commands, so CI runs exactly what a newcomer reads.

Usage: ``python3 .ci/readme_commands.py run|test``: ``run`` is the first
``code-block:: sh`` of the Quick start section (set up and run the service),
``test`` the second (set up and run the tests). Exits 2 if the section or a
command is missing, so the check and the text cannot drift apart.
"""

import pathlib
import sys


def quick_start_commands(text: str) -> list:
    lines = text.splitlines()
    try:
        start = lines.index("Quick start")
    except ValueError:
        sys.exit("README.rst has no 'Quick start' section")
    commands, index = [], start + 2
    while index < len(lines) and not (lines[index] and set(lines[index]) == {"-"}):
        if lines[index].strip() == ".. code-block:: sh":
            index += 1
            while index < len(lines) and not lines[index].strip():
                index += 1
            block = []
            while index < len(lines) and lines[index].startswith("    "):
                block.append(lines[index].strip())
                index += 1
            commands.append(" ".join(block))
            continue
        index += 1
    return commands


def main() -> None:
    which = sys.argv[1:] or ["?"]
    names = {"run": 0, "test": 1}
    if which[0] not in names:
        sys.exit(__doc__)
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.rst"
    commands = quick_start_commands(readme.read_text(encoding="utf-8"))
    if len(commands) <= names[which[0]]:
        sys.exit(f"README.rst's Quick start has {len(commands)} commands, not a '{which[0]}' one")
    print(commands[names[which[0]]])


if __name__ == "__main__":
    main()
