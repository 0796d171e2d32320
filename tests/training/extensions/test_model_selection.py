import types

import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.training.extensions import model_selection


def run_epochs(best, accuracies):
    """Calls ``best`` after each epoch as the trainer would; returns what it
    reported after the last one."""
    trainer = types.SimpleNamespace(updater=types.SimpleNamespace(epoch=0))
    for epoch, (validation, test) in enumerate(accuracies, 1):
        trainer.updater.epoch = epoch
        trainer.observation = {'validation/main/accuracy': validation,
                               'test/main/accuracy': test}
        reported = {}
        with chainer.Reporter().scope(reported):
            best(trainer)
    return reported


def test_best_epoch_and_its_test_accuracy():
    best = model_selection.BestEpoch()
    reported = run_epochs(best, [(0.90, 0.89), (0.95, 0.94), (0.93, 0.96)])
    assert reported == {'best/epoch': 2,
                        'best/validation/main/accuracy': 0.95,
                        'best/test/main/accuracy': 0.94}
    assert best.summary() == ('# best validation accuracy 0.9500 at epoch 2: '
                              'test accuracy 0.9400')


def test_ties_go_to_the_later_epoch():
    # BinaryNet's loop keeps an epoch whose val_err <= best_val_err
    best = model_selection.BestEpoch()
    reported = run_epochs(best, [(0.95, 0.94), (0.95, 0.93), (0.94, 0.99)])
    assert (reported['best/epoch'], reported['best/test/main/accuracy']) == (
        2, 0.93)


def test_nothing_before_the_first_validation():
    best = model_selection.BestEpoch()
    trainer = types.SimpleNamespace(updater=types.SimpleNamespace(epoch=1),
                                    observation={})
    reported = {}
    with chainer.Reporter().scope(reported):
        best(trainer)
    assert reported == {}


def test_state_goes_into_snapshots():
    best = model_selection.BestEpoch()
    run_epochs(best, [(0.9, 0.8), (0.95, 0.85)])
    saved = {}
    best.serialize(_Writer(saved))
    restored = model_selection.BestEpoch()
    restored.serialize(_Reader(saved))
    assert (restored.epoch, restored.validation, restored.test) == (
        2, 0.95, pytest.approx(0.85))


class _Writer(object):
    def __init__(self, store):
        self.store = store

    def __call__(self, key, value):
        self.store[key] = value
        return value


class _Reader(object):
    def __init__(self, store):
        self.store = store

    def __call__(self, key, value):
        return self.store[key]
