"""The `gs3` command line: overrides may stand before or after options."""

from __future__ import annotations

import pytest

from gs3.cli import build_parser, main, parse


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--config", "demo", "--out", "runs/x", "optim.lr=0.1", "data.width=40"],
        ["pretrain", "--config", "demo", "optim.lr=0.1", "--out", "runs/x", "data.width=40"],
        ["pretrain", "optim.lr=0.1", "data.width=40", "--config", "demo", "--out", "runs/x"],
    ],
)
def test_overrides_anywhere_among_options(argv: list[str]) -> None:
    parser, _ = build_parser(argv)
    args = parse(parser, argv)
    assert (args.config, args.out, args.overrides) == ("demo", "runs/x", ["optim.lr=0.1", "data.width=40"])


def test_a_bad_override_after_an_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pretrain", "--config", "demo", "--out", "runs/never", "optim.no_such_key=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "optim.no_such_key" in err[0]


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", "demo", "--no-such-option", "optim.lr=0.1"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
