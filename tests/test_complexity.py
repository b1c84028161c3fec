"""No tangled functions (issue 27): every function and method of the engine (``df4lcz_plugin/``) and of
``algorithms/`` has a cyclomatic complexity of at most 15 as the pinned radon counts it (``radon cc``: one per
branch, loop, comprehension, ``except``, and boolean operator)."""

from pathlib import Path

import pytest
from radon.complexity import add_inner_blocks, cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("df4lcz_plugin", "algorithms")
MAX_COMPLEXITY = 15


def over_limit(source: str, name: str) -> list[str]:
    """'<name>:<line> <function> <complexity>' for each function (closures and methods included) of ``source``
    above MAX_COMPLEXITY."""
    return [f"{name}:{block.lineno} {block.fullname} {block.complexity}"
            for block in add_inner_blocks(cc_visit(source))
            if isinstance(block, Function) and block.complexity > MAX_COMPLEXITY]


@pytest.mark.timeout(120)
def test_no_function_is_above_the_complexity_limit() -> None:
    files = sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))
    assert len(files) > 50  # the engine and the algorithms were found
    found = [line for path in files
             for line in over_limit(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]
    assert not found, (f"{len(found)} function(s) above a cyclomatic complexity of {MAX_COMPLEXITY} (radon cc); split "
                       "each into named steps:\n" + "\n".join(found))


@pytest.mark.timeout(60)
def test_boolean_operators_count() -> None:
    """The limit is radon's count: a function of 15 ``and`` (complexity 16) is caught, one of 14 (15) is not."""
    def source(operators: int) -> str:
        return "def f(x):\n    return " + " and ".join(["x"] * (operators + 1)) + "\n"

    assert over_limit(source(15), "tiny.py") == ["tiny.py:1 f 16"]
    assert over_limit(source(14), "tiny.py") == []
