import argparse
import json
import os
import shutil

import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.training import options as train_options
from qnn.training import run_history
import train_mnist

from helpers import SMALL, one_error_line, read_log, run_files


def options(**changes):
    values = dict(unit=1000, weight_bits=1, seed=0, lr=1e-3, epoch=20,
                  frequency=1, out='result', resume=None, device='-1')
    values.update(changes)
    return argparse.Namespace(**values)


DEFAULTS = options()


def record(**changes):
    return dict(vars(options(**changes)), processes=1, device='@numpy',
                versions={}, resumed=[], started='then')


def test_recipe_options_must_match():
    found = run_history.differences(record(), options(weight_bits=2,
                                                      seed=3), 1, DEFAULTS)
    assert found == [('seed', 0, 3), ('weight_bits', 1, 2)]
    assert run_history.describe(found) == (
        "--seed 0 in the snapshot's run, 3 now; --weight-bits 1 in the "
        "snapshot's run, 2 now")


def test_bookkeeping_may_change():
    assert run_history.differences(
        record(), options(epoch=40, frequency=5, out='elsewhere',
                          resume='auto', device='0'), 1, DEFAULTS) == []


def test_the_number_of_processes_is_part_of_the_recipe():
    assert run_history.differences(record(), options(), 2, DEFAULTS) == [
        ('processes', 1, 2)]


def test_an_option_newer_than_the_record_counts_as_its_default():
    old = record()
    del old['unit']
    assert run_history.differences(old, options(), 1, DEFAULTS) == []
    assert run_history.differences(old, options(unit=50), 1, DEFAULTS) == [
        ('unit', 1000, 50)]


@pytest.mark.parametrize('stochastic', [False, True])
def test_a_record_older_than_the_two_stochastic_options(tmp_path,
                                                        stochastic):
    # before --stochastic-activations and --stochastic-weights, one
    # --stochastic made both stochastic
    old = record()
    old['stochastic'] = stochastic
    (tmp_path / 'config.json').write_text(json.dumps(old))
    config = run_history.read_config(str(tmp_path))
    assert 'stochastic' not in config
    assert config['stochastic_activations'] is stochastic
    assert config['stochastic_weights'] is stochastic
    defaults = options(stochastic_activations=False,
                       stochastic_weights=False)
    same = options(stochastic_activations=stochastic,
                   stochastic_weights=stochastic)
    assert run_history.differences(config, same, 1, defaults) == []
    found = run_history.differences(
        config, options(stochastic_activations=True,
                        stochastic_weights=False), 1, defaults)
    assert found == ([('stochastic_weights', True, False)] if stochastic
                     else [('stochastic_activations', False, True)])
    assert run_history.describe(found) == (
        "--stochastic-weights true in the snapshot's run, false now"
        if stochastic else
        "--stochastic-activations false in the snapshot's run, true now")


def test_a_record_with_the_new_options_keeps_them():
    config = dict(record(), stochastic=True, stochastic_activations=False,
                  stochastic_weights=False)
    assert run_history.upgrade(dict(config)) == config


def test_schedule_follows_the_first_run():
    assert run_history.schedule_epochs(options(epoch=40), record()) == 20
    assert run_history.schedule_epochs(options(epoch=40), None) == 40


def test_config_keeps_the_history(tmp_path):
    device = chainer.get_device('@numpy')
    args = options(out=str(tmp_path), epoch=2)
    run_history.write_config(args, device)
    first = run_history.read_config(str(tmp_path))
    assert first['epoch'] == 2 and first['resumed'] == []
    args = options(out=str(tmp_path), epoch=4, resume='auto')
    run_history.write_config(args, device, record=first,
                             resumed_from='snap', iteration=20)
    second = run_history.read_config(str(tmp_path))
    assert second['epoch'] == 2  # the recipe stays the first run's
    [entry] = second['resumed']
    assert entry['snapshot'] == 'snap' and entry['iteration'] == 20
    assert entry['changed'] == {'epoch': [2, 4], 'resume': [None, 'auto']}
    assert sorted(os.listdir(str(tmp_path))) == ['config.json']


def test_unreadable_config_is_an_error(tmp_path):
    (tmp_path / 'config.json').write_text('{not json')
    with pytest.raises(run_history.RunHistoryError) as e:
        run_history.read_config(str(tmp_path))
    assert 'config.json' in str(e.value)
    assert run_history.read_config(str(tmp_path / 'none')) is None


def write_record(directory, record):
    with open(os.path.join(str(directory), 'config.json'), 'w') as f:
        json.dump(record, f)


@pytest.mark.parametrize('change, words', [
    ({'weight_bits': 'x'}, ['--weight-bits', 'not a number']),
    ({'weight_bits': None}, ['--weight-bits', 'not a value']),
    ({'weight_bits': 2.0}, ['--weight-bits', 'not an integer']),
    ({'layers': '2'}, ['--layers', 'not a number']),
    ({'layers': 10 ** 8}, ['--layers 100000000', 'needs at least']),
    ({'unit': 1e999}, ['--unit', 'not an integer']),
    ({'bn_eps': 'tiny'}, ['--bn-eps', 'not a number']),
    ({'bn_eps': -1}, ['--bn-eps', 'must be a positive number']),
    ({'cnn_size': 'huge'}, ['--cnn-size', 'not one of']),
    ({'input_range': 'wide'}, ['--input-range', 'not one of']),
    ({'dataset': 'imagenet'}, ['dataset \'imagenet\'']),
    ({'arch': 'rnn'}, ['--arch', 'not one of mlp, cnn']),
    ({'stochastic_weights': 1}, ['--stochastic-weights', 'not true or false']),
    ({'colour': 'blue'}, ['unknown option \'colour\'']),
])
def test_read_options_checks_every_recorded_option(tmp_path, change, words):
    write_record(tmp_path, record(**change))
    with pytest.raises(run_history.RunHistoryError) as e:
        run_history.read_options(str(tmp_path))
    message = str(e.value)
    assert message.startswith(str(tmp_path / 'config.json') + ': ')
    for word in words:
        assert word in message, message


def test_read_options_fills_the_recipe_defaults(tmp_path):
    write_record(tmp_path, {'recipe': 'default', 'unit': 30,
                            'versions': {}, 'processes': 1})
    options, record = run_history.read_options(str(tmp_path))
    assert options.unit == 30 and options.layers == 2
    assert options.bn_eps == train_options.parse_args([]).bn_eps
    assert record['versions'] == {}


@pytest.mark.parametrize('make, reason', [
    (lambda p: os.mkfifo(p), 'a FIFO'),
    (lambda p: open(p, 'w').write('[' * 200000), 'nested too deep'),
    (lambda p: os.symlink('/dev/zero', p), 'a character device'),
    (lambda p: open(p, 'w').write('{"unit": 1,' + ' ' * (1 << 23) + '}'),
     'more than the'),
])
def test_a_config_that_is_no_file_or_too_large(tmp_path, make, reason):
    make(str(tmp_path / 'config.json'))
    with pytest.raises(run_history.RunHistoryError, match=reason):
        run_history.read_options(str(tmp_path))


def test_resume_refuses_a_changed_recipe(tmp_path, capsys, good_snapshot):
    out = good_snapshot.parent
    before = {name: (out / name).read_bytes() for name in run_files(out)}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '2', '--out', str(out), '--resume',
                          'auto', '--noplot', '--weight-bits', '2',
                          '--seed', '5'] + SMALL)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert "--seed 0 in the snapshot's run, 5 now" in err
    assert "--weight-bits 1 in the snapshot's run, 2 now" in err
    # nothing of the refused run was written
    assert {name: (out / name).read_bytes()
            for name in run_files(out)} == before


def test_resume_with_more_epochs_is_recorded(tmp_path, capsys):
    out = tmp_path / 'result'
    args = ['--noplot', '--out', str(out)] + SMALL
    assert train_mnist.main(['--epoch', '1'] + args) == 0
    assert train_mnist.main(['--epoch', '2', '--resume', 'auto'] + args) \
        == 0
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert config['epoch'] == 1  # the recipe: the first run's
    [entry] = config['resumed']
    assert entry['iteration'] == 10
    assert entry['snapshot'] == str(out / 'snapshot_iter_10')
    assert entry['changed'] == {'epoch': [1, 2], 'resume': [None, 'auto']}
    # the step size keeps the first run's rate (1e-2 a epoch for a 1-epoch
    # schedule from 1e-3 to 1e-5): epoch 2 runs at 1e-5
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas[0] == pytest.approx(1e-3)
    assert alphas[1] == pytest.approx(1e-3 * (1e-5 / 1e-3) ** 1)


def test_resume_of_a_run_older_than_the_two_stochastic_options(
        tmp_path, capsys, good_snapshot):
    # its config.json has one `stochastic`, for weights and activations
    out = tmp_path / 'result'
    out.mkdir()
    shutil.copy(str(good_snapshot), str(out))
    config = json.loads((good_snapshot.parent / 'config.json').read_text())
    del config['stochastic_activations'], config['stochastic_weights']
    config['stochastic'] = True
    (out / 'config.json').write_text(json.dumps(config))
    args = ['--epoch', '2', '--noplot', '--out', str(out), '--resume',
            'auto'] + SMALL
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(args)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert ("--stochastic-activations true in the snapshot's run, false "
            "now; --stochastic-weights true in the snapshot's run, false "
            "now") in err
    assert train_mnist.main(args + ['--stochastic-activations',
                                    '--stochastic-weights']) == 0
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert 'stochastic' not in config
    assert config['stochastic_activations'] and config['stochastic_weights']
    [entry] = config['resumed']
    assert entry['iteration'] == 10


def test_resume_without_config_beside_the_snapshot(tmp_path, capsys,
                                                   good_snapshot):
    snapshot = tmp_path / 'snapshot_iter_10'
    snapshot.write_bytes(good_snapshot.read_bytes())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '2', '--noplot', '--resume',
                          str(snapshot), '--out', str(tmp_path / 'r')] +
                         SMALL)
    assert e.value.code == 1
    assert 'no config.json beside it' in one_error_line(capsys)
    assert not (tmp_path / 'r').exists()
