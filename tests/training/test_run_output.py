"""What a training run writes (qnn.training.run_output): an output directory
that cannot be used, is busy or holds another run is refused in one line,
with nothing written; the header."""
import json
import os

import pytest

from qnn.training import options as train_options
from qnn.training import output_lock
from qnn.training import run_output
import train_mnist

from helpers import SMALL, one_error_line, run_files


def unwritable_directory(tmp_path):
    """A directory this process cannot write to: a read-only one, or, for
    root, whom permissions do not stop, /sys (mounted read-only)."""
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with open(str(locked / 'probe'), 'w'):
            pass
    except OSError:
        return str(locked)
    for candidate in ('/sys', '/proc'):
        if not os.access(candidate, os.W_OK) or not _can_write(candidate):
            return candidate
    pytest.skip('no unwritable directory here')


def _can_write(directory):
    try:
        with open(os.path.join(directory, 'qnn-probe'), 'w'):
            pass
    except OSError:
        return False
    os.remove(os.path.join(directory, 'qnn-probe'))
    return True


@pytest.mark.parametrize('case', ['file', 'under a file', 'unwritable'])
def test_unusable_output_directory_is_one_line(tmp_path, capsys, case):
    if case == 'unwritable':
        parent = unwritable_directory(tmp_path)
        out = os.path.join(parent, 'result')
        reason = 'cannot write to the output directory {}: '.format(out)
    else:
        blocker = tmp_path / 'result'
        blocker.write_text('not a directory')
        out = str(blocker) if case == 'file' else str(blocker / 'sub')
        reason = 'cannot write to the output directory {}: {} is not a ' \
            'directory'.format(out, blocker)
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--out', out] + SMALL)
    assert e.value.code == 1
    assert one_error_line(capsys).startswith('train_mnist.py: error: ' +
                                             reason)
    assert not os.path.exists(os.path.join(out, 'log'))
    if case != 'unwritable':
        assert blocker.read_text() == 'not a directory'


def test_a_busy_output_directory_is_refused(tmp_path, capsys):
    out = tmp_path / 'result'
    out.mkdir()
    with output_lock.OutputLock(str(out)):
        before = run_files(out)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train_mnist.main(['--epoch', '1', '--noplot', '--out', str(out)]
                             + SMALL)
        assert e.value.code == 1
        err = one_error_line(capsys)
        assert str(out) in err
        assert 'process {}'.format(os.getpid()) in err
        assert run_files(out) == before == []


def test_a_directory_of_another_run_is_refused_or_replaced(tmp_path,
                                                           capsys):
    # a second run would replace config.json, log and the same-named
    # snapshots and leave the others, which then fit no config.json
    out = tmp_path / 'result'
    first = ['--epoch', '2', '--noplot', '--out', str(out)] + SMALL
    assert train_mnist.main(first) == 0
    before = {name: (out / name).read_bytes() for name in run_files(out)}
    capsys.readouterr()
    second = ['--epoch', '1', '--noplot', '--out', str(out), '--unit', '30',
              '--train-subset', '500', '--batchsize', '50']
    for resume in ([], ['--resume', str(tmp_path / 'other' / 'x')]):
        if resume:  # a snapshot of another directory resumed into this one
            (tmp_path / 'other').mkdir()
            (tmp_path / 'other' / 'x').write_bytes(before['snapshot_iter_20'])
        with pytest.raises(SystemExit) as e:
            train_mnist.main(second + resume)
        assert e.value.code == 1
        err = one_error_line(capsys)
        for word in ('another run', '--resume auto', '--out',
                     '--replace-out', 'config.json'):
            assert word in err, err
        assert {name: (out / name).read_bytes()
                for name in run_files(out)} == before
    assert train_mnist.main(second + ['--replace-out']) == 0
    assert run_files(out) == ['cg.dot', 'config.json', 'log',
                              'snapshot_iter_10']
    with open(str(out / 'config.json')) as f:
        assert json.load(f)['unit'] == 30
    # the run itself goes on with --resume auto, without --replace-out
    assert train_mnist.main(second[:1] + ['2'] + second[2:] +
                            ['--resume', 'auto']) == 0
    assert 'snapshot_iter_20' in run_files(out)


@pytest.mark.parametrize('options, shown', [
    ([], '(linear)'),
    (['--stochastic-activations'], '(linear, stochastic activations)'),
    (['--stochastic-weights'], '(linear, stochastic weights)'),
    (['--stochastic-weights', '--stochastic-activations'],
     '(linear, stochastic weights and activations)'),
])
def test_header_says_what_is_stochastic(options, shown, capsys):
    run_output.print_header(train_options.parse_args(options), '@numpy')
    assert '# bits: weights 1, activations 1, gradients 32, errors 32 ' + \
        shown in capsys.readouterr().out.splitlines()
