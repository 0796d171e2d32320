import argparse
import json
import os

import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.training import run_history


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
