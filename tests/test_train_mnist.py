import json
import os

import numpy
import pytest

import train_mnist

from helpers import COLUMNS
from helpers import SMALL
from helpers import log_values
from helpers import one_error_line
from helpers import read_log
from helpers import run_script


def test_end_to_end(tmp_path):
    out = tmp_path / 'result'
    proc = run_script('--epoch', '2', '--out', str(out), '--lr', '0.01',
                      *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == ['Device: @numpy', '# unit: 32',
                         '# Minibatch-size: 50', '# epoch: 2']
    header = next(line for line in lines if line.startswith('epoch'))
    assert header.split() == COLUMNS
    assert '\033' not in proc.stdout  # plain text when not on a terminal
    rows = [line.split() for line in lines[lines.index(header) + 1:]]
    assert [row[0] for row in rows] == ['0', '1', '2']
    assert all(len(row) == 6 for row in rows[1:])
    log = read_log(out)
    # epoch 0: evaluation before training, as in Chainer's example
    assert [entry['epoch'] for entry in log] == [0, 1, 2]
    for key in COLUMNS:
        assert key in log[-1]
    # the two epochs learned something on 500 images
    assert log[-1]['validation/main/accuracy'] > 0.5
    for name in ('loss.png', 'accuracy.png', 'cg.dot', 'snapshot_iter_10',
                 'snapshot_iter_20'):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name


def test_same_seed_same_log(tmp_path):
    logs = []
    for name in ('a', 'b', 'c'):
        seed = '1' if name == 'c' else '0'
        out = tmp_path / name
        assert train_mnist.main(['--epoch', '1', '--out', str(out),
                                 '--noplot', '--seed', seed] + SMALL) == 0
        logs.append([{k: v for k, v in entry.items()
                      if k != 'elapsed_time'} for entry in read_log(out)])
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def test_quantization_options_end_to_end(tmp_path, capsys):
    out = tmp_path / 'result'
    options = ['--weight-bits', '2', '--activation-bits', '4',
               '--quantizer', 'log', '--stochastic-activations',
               '--stochastic-weights', '--gradient-bits', '2',
               '--error-bits', '8']
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot',
                             '--lr', '0.01'] + options + SMALL) == 0
    captured = capsys.readouterr()
    assert ('# bits: weights 2, activations 4, gradients 2, errors 8 '
            '(log, stochastic weights and activations)') in \
        captured.out.splitlines()
    # 2-bit gradients for 2-bit weights: warned, not refused
    assert captured.err.startswith(
        'train_mnist.py: warning: --gradient-bits 2 is not larger than '
        '--weight-bits 2')
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert (config['weight_bits'], config['activation_bits'],
            config['quantizer'], config['stochastic_activations'],
            config['stochastic_weights'], config['gradient_bits'],
            config['error_bits']) == (2, 4, 'log', True, True, 2, 8)
    assert config['versions']['chainer'] == '7.8.1'
    assert read_log(out)[-1]['validation/main/accuracy'] > 0.3
    # no temporary file left next to it
    assert not [p for p in os.listdir(str(out)) if p.startswith('.config')]


def test_full_precision_differs_from_binarized(tmp_path):
    logs = []
    for bits in ('1', '32'):
        out = tmp_path / bits
        assert train_mnist.main(
            ['--epoch', '1', '--out', str(out), '--noplot',
             '--weight-bits', bits, '--activation-bits', bits] + SMALL) == 0
        logs.append(read_log(out)[-1]['main/loss'])
    assert logs[0] != logs[1]


# One recipe per run (qnn/training/run_history.py, qnn/training/output_lock.py)


# The paper's recipes and their pieces (train_options, model_selection)


def test_validation_split_reports_test_and_best_epoch(tmp_path, capsys):
    out = tmp_path / 'result'
    assert train_mnist.main(['--epoch', '2', '--noplot', '--out', str(out),
                             '--validation', '300', '--recipe',
                             'binarynet-theano', '--layers', '2'] +
                            SMALL) == 0
    printed = capsys.readouterr().out
    assert 'test/main/accuracy' in printed and 'best/epoch' in printed
    log = read_log(out)
    # the latest of the best on ties
    best = max(log[1:], key=lambda e: (e['validation/main/accuracy'],
                                       e['epoch']))
    assert log[-1]['best/epoch'] == best['epoch']
    assert log[-1]['best/test/main/accuracy'] == best['test/main/accuracy']
    assert '# best validation accuracy {:.4f} at epoch {}'.format(
        best['validation/main/accuracy'], best['epoch']) in printed
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    # the expanded recipe is recorded
    assert (config['recipe'], config['loss'], config['hidden_dropout'],
            config['layers']) == ('binarynet-theano', 'squared_hinge', 0.5, 2)


def test_bn_population_more_than_the_training_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--bn-population', '600', '--out',
                          str(tmp_path / 'r')] + SMALL)
    assert e.value.code == 2
    assert '--bn-population 600 is more than the 500 training images' in \
        one_error_line(capsys)


def test_bn_population_changes_the_statistics_only(tmp_path):
    # training never reads the running statistics: the same weights,
    # optimizer state and training losses, other evaluations
    runs = {}
    for name, options in (('running', []),
                          ('population', ['--bn-population', '300'])):
        out = tmp_path / name
        assert train_mnist.main(['--epoch', '2', '--noplot', '--out',
                                 str(out)] + SMALL + options) == 0
        runs[name] = (log_values(out),
                      dict(numpy.load(str(out / 'snapshot_iter_20'))))
    (log_a, snap_a), (log_b, snap_b) = runs['running'], runs['population']
    assert [e.get('main/loss') for e in log_a] == \
        [e.get('main/loss') for e in log_b]
    assert [e['validation/main/loss'] for e in log_a] != \
        [e['validation/main/loss'] for e in log_b]
    differ = sorted(key.rsplit('/', 1)[-1] for key in snap_a
                    if key.startswith('updater/') and
                    not numpy.array_equal(snap_a[key], snap_b[key]))
    assert differ and set(differ) == {'avg_mean', 'avg_var'}


def test_torch_recipe_pieces_train(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--recipe', 'binarynet-torch', '--layers', '2',
                             '--epoch', '2', '--validation', '300',
                             '--noplot', '--out', str(out)] + SMALL) == 0
    log = read_log(out)
    assert log[-1]['main/loss'] < log[1]['main/loss']


# Convolutional networks and other data sets (--arch, --dataset)

def test_augmentation_moves_training_images_only(tmp_path, capsys):
    logs = {}
    for name, options in (('plain', []),
                          ('moved', ['--random-shift', '2',
                                     '--random-flip'])):
        out = tmp_path / name
        assert train_mnist.main(['--epoch', '1', '--noplot', '--out',
                                 str(out)] + SMALL + options) == 0
        logs[name] = read_log(out)
        with open(str(out / 'config.json')) as f:
            config = json.load(f)
        assert (config['random_shift'], config['random_flip']) == (
            (2, True) if options else (0, False))
    assert ('# augmentation: shifts of up to 2 pixels, left-right mirror'
            in capsys.readouterr().out)
    # the same network evaluated before training: the test images as they
    # are; after an epoch on moved images, another training
    assert logs['plain'][0] == {**logs['moved'][0], 'elapsed_time':
                                logs['plain'][0]['elapsed_time']}
    assert logs['plain'][1]['main/loss'] != logs['moved'][1]['main/loss']


def test_binarized_cnn_trains(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--arch', 'cnn', '--epoch', '2', '--noplot',
                             '--out', str(out), '--train-subset', '300',
                             '--test-subset', '100', '--batchsize', '50',
                             '--lr', '0.01', '--lr-schedule',
                             'constant']) == 0
    log = read_log(out)
    assert log[-1]['main/loss'] < log[1]['main/loss']
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert (config['arch'], config['cnn_size']) == ('cnn', 'small')
    # the snapshot holds convolution filters
    with numpy.load(str(out / 'snapshot_iter_12')) as snapshot:
        assert snapshot['updater/model:main/predictor/conv1_1/W'].ndim == 4


def test_binarized_cnn_with_glorot_step_sizes_and_shift_adamax(tmp_path):
    # the convolutions' weights must exist before the step sizes are scaled
    out = tmp_path / 'result'
    assert train_mnist.main(['--arch', 'cnn', '--glorot-step-sizes',
                             '--optimizer', 'shift_adamax', '--epoch', '1',
                             '--noplot', '--out', str(out),
                             '--train-subset', '100', '--test-subset',
                             '100', '--batchsize', '50']) == 0
    assert read_log(out)[-1]['epoch'] == 1


def test_fashion_mnist_mlp_trains(tmp_path, capsys):
    from qnn.datasets import fashion_mnist
    if not fashion_mnist.available():
        if os.environ.get('QNN_REQUIRE_FASHION_MNIST') == '1':
            pytest.fail('Fashion-MNIST is not installed (make fashion-mnist)')
        pytest.skip('Fashion-MNIST is not installed (make fashion-mnist)')
    out = tmp_path / 'result'
    assert train_mnist.main(['--dataset', 'fashion-mnist', '--epoch', '1',
                             '--noplot', '--out', str(out)] + SMALL) == 0
    assert '# dataset: fashion-mnist' in capsys.readouterr().out
    assert read_log(out)[-1]['validation/main/accuracy'] > 0.3




def test_tiny_wage_seed_run_trains_above_chance(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--recipe', 'wage-seed', '--epoch', '5',
                             '--noplot', '--out', str(out),
                             '--train-subset', '4000', '--test-subset',
                             '500', '--batchsize', '50']) == 0
    log = read_log(out)
    # ten classes: chance is 0.1 (the 1-bit weights learn slowly at first:
    # about 0.2 after 200 steps, 0.45 after 470, 0.85 after 10 epochs of
    # MNIST)
    assert log[-1]['validation/main/accuracy'] > 0.3
    assert log[-1]['main/loss'] < log[1]['main/loss']
    with numpy.load(str(out / 'snapshot_iter_400')) as snapshot:
        w = snapshot['updater/model:main/predictor/fc1/W']
    # WageSGD keeps the weights in [-1 + 2^-7, 1 - 2^-7], on its grid of
    # 2^-7 steps away from the initial values
    assert w.shape == (120, 128) and abs(w).max() <= 1 - 2.0 ** -7


@pytest.mark.parametrize('option,value', [
    ('--randomizer-bits', '0'), ('--randomizer-bits', '33'),
    ('--gradient-bits', '1'), ('--error-bits', '40'),
    ('--weight-bits', '0'), ('--lr-steps', '75'), ('--lr-steps', '9:1,5:1'),
    ('--wage-net', 'alexnet')])
def test_bad_wage_values_exit_2_with_argparses_error(option, value, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--recipe', 'wage-seed', option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage:') and 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert ': error: argument {}'.format(option) in last


def test_steps_schedule_needs_its_steps(capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--lr-schedule', 'steps'])
    assert e.value.code == 2
    assert '--lr-schedule steps goes with --lr-steps' in \
        capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize('option', [['--quantizer', 'log'],
                                    ['--stochastic-weights']])
def test_wage_refuses_the_other_quantizers(option, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--recipe', 'wage-seed'] + option)
    assert e.value.code == 2
    assert "--arch wage quantizes with WAGE's own grids" in \
        capsys.readouterr().err.strip().splitlines()[-1]
