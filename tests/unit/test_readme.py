"""The README opens as promised, CI runs its test command verbatim, and its reference is complete."""

import re
from pathlib import Path

import typer

from aiaas_backend.cli import app
from aiaas_backend.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _opening_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    return [block.strip() for block in blocks[:2]]


def test_readme_opens_with_two_sentences_a_screenshot_then_the_two_commands():
    main_job, tests = _opening_commands()
    assert "torch==2.13.0" in main_job and "examples/train_digits.py" in main_job
    assert "torch==2.13.0" in tests and tests.endswith("python -m pytest")
    head = README.split("```")[0].strip().split("\n\n")
    assert head[0] == "# aiaas"
    assert len(re.findall(r"[.!?](\s|$)", head[1])) == 2, "what aiaas is, in two sentences"
    image = re.fullmatch(r"!\[[^\]]+\]\(([^)]+)\)", head[2])
    assert image and (ROOT / image.group(1)).stat().st_size > 10_000
    assert len(head) == 3
    # Exactly two commands before anything else: the next code block comes after a heading.
    rest = README.split(tests + "\n```", 1)[1]
    assert rest.index("\n## ") < rest.index("```")


def test_ci_runs_the_readme_test_command_in_a_virtualenv_inside_the_checkout():
    _, tests = _opening_commands()
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in lines
    assert lines.index("python -m venv .venv") < lines.index(". .venv/bin/activate") < lines.index(tests)


def test_the_main_job_exists():
    assert (ROOT / "examples" / "train_digits.py").exists()


def test_every_backend_setting_is_documented():
    missing = [f"AIAAS_{name.upper()}" for name in Settings.model_fields if f"`AIAAS_{name.upper()}`" not in README]
    assert missing == [], f"add these to the README's configuration reference: {missing}"


def test_every_cli_flag_is_documented():
    command = typer.main.get_command(app)
    flags = []
    for sub in command.commands.values():  # typer now vendors its own click: duck-type the groups
        subcommands = sub.commands.values() if hasattr(sub, "commands") else [sub]
        for leaf in subcommands:
            flags += [opt for param in leaf.params for opt in param.opts if opt.startswith("--")]
    assert "--host" in flags and "--user" in flags
    missing = sorted({flag for flag in flags if f"`{flag}" not in README and f"{flag} " not in README})
    assert missing == [], f"add these flags to the README: {missing}"


def test_documents_the_readme_links_to_exist():
    for target in re.findall(r"\]\(([^)#:]+)\)", README):
        assert (ROOT / target).exists(), f"the README links to {target}, which does not exist"
