"""The README opens with the two set-up commands, and CI runs the second verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [block.strip() for block in blocks[:2]]


def test_readme_opens_with_install_and_run_then_install_and_test():
    main_job, tests = _opening_commands()
    assert "torch==2.13.0" in main_job and "examples/train_digits.py" in main_job
    assert "torch==2.13.0" in tests and tests.endswith("python -m pytest")
    before_first = (ROOT / "README.md").read_text().split("```bash")[0]
    assert before_first.strip() == "# aiaas"


def test_ci_runs_the_readme_test_command():
    _, tests = _opening_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_main_job_exists():
    assert (ROOT / "examples" / "train_digits.py").exists()
