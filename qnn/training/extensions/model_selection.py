"""Model selection as the paper reports it: the test accuracy at the epoch
of best validation accuracy.

With ``--validation N`` the trainer evaluates a held-out part of the
training set (``validation/...``) and the test set (``test/...``) every
epoch; :class:`BestEpoch` reports, from then on, ``best/epoch`` (the epoch of
the highest validation accuracy so far; the latest on ties, as BinaryNet's
training loop, which keeps an epoch whose ``val_err <= best_val_err``) and
the test accuracy of that epoch as ``best/test/main/accuracy``.
"""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import training
from chainer.training import extension


class BestEpoch(extension.Extension):

    """Trainer extension tracking the best-validation epoch.

    Runs after the evaluators (which write) and before LogReport (which
    reads); its state goes into snapshots so a resumed run keeps it.

    Args:
        validation_key (str): Observation to maximize.
        test_key (str): Observation reported at the best epoch.
    """
    trigger = 1, 'epoch'
    priority = training.PRIORITY_EDITOR

    def __init__(self, validation_key='validation/main/accuracy',
                 test_key='test/main/accuracy'):
        self.validation_key = validation_key
        self.test_key = test_key
        self.epoch = 0
        self.validation = -1.0
        self.test = -1.0

    def __call__(self, trainer):
        observation = trainer.observation
        if self.validation_key not in observation:
            return
        validation = float(observation[self.validation_key])
        if validation >= self.validation:  # ties: the later epoch
            self.epoch = trainer.updater.epoch
            self.validation = validation
            self.test = float(observation.get(self.test_key, float('nan')))
        chainer.report({'best/epoch': self.epoch,
                        'best/' + self.validation_key: self.validation,
                        'best/' + self.test_key: self.test})

    def serialize(self, serializer):
        self.epoch = serializer('epoch', self.epoch)
        self.validation = serializer('validation', self.validation)
        self.test = serializer('test', self.test)

    def summary(self):
        """One line for the end of the run."""
        return ('# best validation accuracy {:.4f} at epoch {}: test '
                'accuracy {:.4f}'.format(self.validation, self.epoch,
                                         self.test))
