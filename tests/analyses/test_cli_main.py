"""The command line's contract: one meaning per flag, one-line user errors, tracebacks for bugs with -v."""

from __future__ import annotations

import pytest

from analyses import cli


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch, capsys):
    """Defect: TypeError/KeyError/NotImplementedError became one-line 'user errors', hiding bugs."""
    from analyses.cli import hessian

    def broken(args):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(hessian, "run", broken)
    assert cli.main(["hessian", "--top-k", "1"]) == 1
    err = capsys.readouterr().err
    assert "internal error: TypeError" in err and "-v" in err and "Traceback" not in err
    assert cli.main(["-v", "hessian", "--top-k", "1"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_user_error_is_one_line_with_exit_2(monkeypatch, capsys):
    from analyses.cli import hessian

    def bad(args):
        raise ValueError("--top-k must be ≥ 0.")

    monkeypatch.setattr(hessian, "run", bad)
    assert cli.main(["hessian"]) == 2
    assert capsys.readouterr().err.strip() == "landscape: error: --top-k must be ≥ 0."


def test_flags_mean_one_thing_everywhere():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    commands = {"fisher": sub["fisher"], "hessian": sub["hessian"], "scan": sub["scan"], "audit": sub["audit"],
                "default-model": sub["default-model"],
                "analyze fisher-sharpness": next(a for a in sub["analyze"]._actions if a.dest == "analysis").choices["fisher-sharpness"]}
    for name, p in commands.items():
        flags = {o: a for a in p._actions for o in a.option_strings}
        assert "--no-progress" in flags and "--quiet" not in flags, name
        if "--range" in flags:
            assert flags["--range"].nargs == "+", name
        if "--include" in flags:
            assert flags["--include"].nargs == "+", name
    assert cli.parse_range([0.5]) == (-0.5, 0.5) and cli.parse_range([-1, 2]) == (-1.0, 2.0)
    with pytest.raises(ValueError, match="symmetric"):
        cli.parse_range([-1, 2], symmetric=True)
    with pytest.raises(ValueError, match="LO < HI"):
        cli.parse_range([1, -1])
