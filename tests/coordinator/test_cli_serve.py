"""``python -m coordinator serve`` with a database it cannot use: one line naming it and
exit 2, before any server starts (a tester saw ~100 lines of start-up traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.__main__ import main
from simulators.brokers import free_port


@pytest.mark.parametrize("database", [
    "/nonexistent/dir/x.sqlite",
    "mysql://db-host/breakwater",
    "sqlite:///",
])
def test_serve_with_a_database_it_cannot_use_says_so_in_one_line(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--db", database, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_serve_against_a_postgresql_server_that_is_down_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/breakwater"
    assert main(["serve", "--db", down, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot open database") and "Traceback" not in err
