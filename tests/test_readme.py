"""The README stays what a new user needs: two commands first, at most about 150 lines, and a
usage example that runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_opens_with_the_two_commands():
    first = README.read_text().split("```")[1]
    commands = first.splitlines()[1:]
    assert first.startswith("sh\n") and len(commands) == 2
    assert commands[0].endswith("genfast bench") and commands[1].endswith("python -m pytest")


def test_is_short():
    assert len(README.read_text().splitlines()) <= 150


def test_usage_example_runs():
    example = _blocks("python")[0]
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["h"].shape == (16, 64, 28, 28)
    assert namespace["images"].shape == (16, 1, 28, 28)
    assert namespace["z"].shape == (32, 16) and namespace["kl"].dim() == 0
