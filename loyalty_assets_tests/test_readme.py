"""The README's shell blocks work as written on a fresh home after a (small) demo, `demo` on the
day after a demo writes the missing day instead of failing, and the environment table is the code's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from loyalty_assets.settings import VARIABLE_NAMES, environment_table_markdown

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
CUSTOMERS = "4000"  # the demo's 15,000 members change nothing a command does, only its time
TIMEOUT_SECONDS = 1200

# Blocks left out, by their first line, with the reason.
LEFT_OUT = {
    "make demo": "creates .venv and installs from PyPI; the fixture runs what it then runs, `loyalty-assets demo`",
    "export LOYALTY_START_DATE=2018-01-01": "needs the team's own extract; test_cli_runs starts from one sample extract",
}


def shell_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _run(env: dict[str, str], command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh home after `demo` as of yesterday: the venv's commands first on the PATH."""
    home = tmp_path_factory.mktemp("readme_home")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LOYALTY_", "DAGSTER_"))}
    env.update(
        LOYALTY_HOME=str(home),
        PYTHONPATH=str(REPO_ROOT),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    demo = _run(env, ["loyalty-assets", "demo", "--customers", CUSTOMERS, "--as-of", yesterday])
    assert demo.returncode == 0, demo.stderr
    return env


def test_every_shell_block_is_run_or_left_out_with_a_reason() -> None:
    first_lines = [block.splitlines()[0].split("#")[0].strip() for block in shell_blocks()]
    assert set(LEFT_OUT) <= set(first_lines), "a left-out block is no longer in the README"
    assert len(first_lines) - len(LEFT_OUT) == 2, first_lines


def test_the_environment_table_is_the_one_the_settings_render() -> None:
    assert environment_table_markdown() in README.read_text()


def test_every_variable_the_package_names_is_in_the_table() -> None:
    source = "\n".join(path.read_text() for path in (REPO_ROOT / "loyalty_assets").rglob("*.py"))
    named = set(re.findall(r"[\"'](LOYALTY_[A-Z_]+)[\"']", source))
    assert {"LOYALTY_ENV", "LOYALTY_SMTP_PASSWORD", "LOYALTY_API_KEYS"} <= named
    assert named <= VARIABLE_NAMES, sorted(named - VARIABLE_NAMES)


def test_demo_the_day_after_writes_the_missing_day(env: dict[str, str]) -> None:
    result = _run(env, ["loyalty-assets", "demo", "--customers", CUSTOMERS])
    assert result.returncode == 0, result.stderr
    assert f"wrote sample drops for {date.today()} to" in result.stdout
    assert "outputs:" in result.stdout


@pytest.mark.parametrize(
    "block",
    [block for block in shell_blocks() if block.splitlines()[0].split("#")[0].strip() not in LEFT_OUT],
    ids=lambda block: block.splitlines()[0][:40],
)
def test_readme_block_works_as_written(env: dict[str, str], block: str) -> None:
    result = _run(env, ["bash", "-euo", "pipefail", "-c", block])
    assert result.returncode == 0, f"{block}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
