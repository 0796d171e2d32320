"""One-line errors and exit statuses (qnn.utils.errors)."""
import pytest

from qnn.utils import errors


def test_fail_is_one_line_with_the_program_and_exit_1(capsys, monkeypatch):
    monkeypatch.setattr(errors, 'program', 'export.py')
    with pytest.raises(SystemExit) as e:
        errors.fail('result/snapshot_iter_5: not a snapshot')
    assert e.value.code == errors.EXIT_ERROR == 1
    out, err = capsys.readouterr()
    assert out == ''
    assert err == 'export.py: error: result/snapshot_iter_5: not a snapshot\n'


def test_stop_keeps_the_status(capsys):
    with pytest.raises(SystemExit) as e:
        errors.stop('training diverged', errors.EXIT_DIVERGED)
    assert e.value.code == 3
    assert capsys.readouterr().err.endswith(': training diverged\n')


def test_tell_and_warn_go_on(capsys):
    errors.tell('skipping a damaged snapshot')
    errors.warn('gradients no finer than the weights')
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert 'skipping a damaged snapshot' in lines[0]
    assert 'warning' in lines[1]


def test_the_exit_statuses_are_in_the_help_text():
    for status in (errors.EXIT_ERROR, errors.EXIT_USAGE,
                   errors.EXIT_DIVERGED):
        assert '  {} '.format(status) in errors.EXIT_STATUS_HELP
