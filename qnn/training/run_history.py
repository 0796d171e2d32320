"""The record of a run in ``config.json``, and what a resumed run may change.

``config.json`` holds the options of the run that started the output
directory (its recipe), the device, versions and number of processes, and
under ``"resumed"`` one entry per later invocation that resumed it: when,
from which snapshot and iteration, and which options it changed. It is
written atomically (a temporary file renamed over the old one).

A resumed run must train the same thing the same way: every option is part
of the recipe except those in :data:`BOOKKEEPING`, and :func:`differences`
lists the recipe options whose values differ from the record. The
exponential step-size schedule belongs to the recipe too: its rate is fixed
by the first run's ``--epoch`` (:func:`schedule_epochs`), so a run resumed
with a larger ``--epoch`` keeps decaying at the same rate past ``--lr-final``
instead of changing the step sizes of the epochs that remain.

A record older than an option that replaced another is read in today's
names (:data:`REPLACED`): ``--stochastic``, which made weights and
activations stochastic both, is read as ``--stochastic-activations`` and
``--stochastic-weights`` with its value.
"""
import datetime
import json
import os
import platform

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.training import options as train_options
from qnn.utils import atomic_files
from qnn.utils import errors
from qnn.utils import input_files

CONFIG_NAME = 'config.json'
# a record is some 2 kB, and 500 bytes more for each resumed run
MAX_CONFIG_BYTES = 1 << 20

# options that change only what is written, kept or shown, not what is
# trained or how; every other option (and the number of processes) must
# match the snapshot's run
BOOKKEEPING = frozenset([
    'epoch', 'frequency', 'snapshot_keep', 'eval_batchsize', 'plot', 'out',
    'replace_out', 'resume', 'device', 'data_dir', 'divergence_check'])
# recorded beside the options, not options themselves
_RECORD_KEYS = frozenset(['device', 'versions', 'resumed', 'started'])
# what read_options skips: the record's own keys (its device is the one
# used, not as specified)
_NOT_OPTIONS = _RECORD_KEYS | {'processes'}
# an option that is no more -> the options that took its place with its
# value
REPLACED = {
    'stochastic': ('stochastic_activations', 'stochastic_weights'),
}


class RunHistoryError(Exception):
    """config.json is missing, unreadable or disagrees with this run."""


def read_config(directory):
    """The record in ``directory`` (in today's option names:
    :func:`upgrade`), or ``None`` if it has none."""
    path = os.path.join(directory, CONFIG_NAME)
    try:
        config = input_files.read_json(path, MAX_CONFIG_BYTES,
                                       'a config.json')
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunHistoryError('cannot read {}: {}'.format(
            path, e.strerror or e))
    except ValueError as e:
        raise RunHistoryError('cannot read {}: {}'.format(path, e))
    if not isinstance(config, dict):
        raise RunHistoryError('{} is not a run record'.format(path))
    return upgrade(config)


def read_options(directory):
    """``(options, record)`` of the run in ``directory``: its options as
    ``train_mnist.py`` parsed them (an ``argparse.Namespace``, each value
    checked as the command line checks it, its recipe's defaults for those
    the record lacks) and the record itself; raises
    :class:`RunHistoryError` if there is no ``config.json`` or it is not
    one ``train_mnist.py`` wrote."""
    path = os.path.join(directory, CONFIG_NAME)
    record = read_config(directory)
    if record is None:
        raise RunHistoryError('no {} in {}'.format(CONFIG_NAME, directory))
    try:
        options = train_options.options_of_record(record, _NOT_OPTIONS)
    except train_options.RecordError as e:
        raise RunHistoryError('{}: {}'.format(path, e))
    return options, record


def upgrade(config):
    """``config`` (a record, changed in place) with each option of
    :data:`REPLACED` it has, and none of whose successors it has, replaced
    by its successors with its value."""
    for old, new in REPLACED.items():
        if old in config and not any(name in config for name in new):
            value = config.pop(old)
            config.update((name, value) for name in new)
    return config


def record_of(snapshot_path, out):
    """The record of the run a resumed run continues: ``config.json`` beside
    the snapshot (in ``out`` for ``--resume auto``)."""
    directory = out if snapshot_path == 'auto' else \
        os.path.dirname(os.path.abspath(snapshot_path))
    return read_config(directory)


def record_for(args):
    """The record of the run that ``--resume`` continues (``None`` without
    ``--resume``, or if the snapshot has no ``config.json`` beside it);
    fails with one line if that file cannot be read."""
    if args.resume is None:
        return None
    try:
        return record_of(args.resume, args.out)
    except RunHistoryError as e:
        errors.fail(e)


def schedule_epochs(args, record):
    """The number of epochs the step-size schedule was made for."""
    if record is not None and 'epoch' in record:
        return record['epoch']
    return args.epoch


def differences(record, args, processes, defaults):
    """``[(option, recorded value, value now)]`` for each recipe option that
    differs from the record. An option the record lacks (it is older than
    the option) counts as its default, ``defaults`` (a Namespace)."""
    now = dict(vars(args), processes=processes)
    before = dict(vars(defaults), processes=1)
    before.update(record)
    found = []
    for name in sorted((set(now) | set(before)) - BOOKKEEPING -
                       _RECORD_KEYS):
        old, new = before.get(name), now.get(name)
        if old != new:
            found.append((name, old, new))
    return found


def check_recipe(record, args, snapshot_path, processes, defaults):
    """Fails with one line unless this run trains what the snapshot's run
    (``record``) trained, the same way."""
    if record is None:
        errors.fail('cannot resume from {}: there is no config.json beside '
                    'it, so its recipe cannot be checked; put the '
                    'config.json of the run that wrote it next to it'.format(
                        snapshot_path))
    found = differences(record, args, processes, defaults)
    if found:
        errors.fail(
            'cannot resume from {}: it was trained with another recipe: {} '
            '(only --epoch, --frequency, --snapshot-keep, --eval-batchsize, '
            '--noplot, --out, --device, --data-dir may change)'.format(
                snapshot_path, describe(found)))


def describe(found):
    """``--unit 32 in the snapshot's run, 16 now; ...``"""
    return '; '.join(
        '--{} {} in the snapshot\'s run, {} now'.format(
            name.replace('_', '-'), _shown(old), _shown(new))
        for name, old, new in found)


def _shown(value):
    return 'unset' if value is None else json.dumps(value)


def _versions(device):
    versions = {'python': platform.python_version(),
                'chainer': chainer.__version__, 'numpy': numpy.__version__}
    if device.xp is chainer.backends.cuda.cupy:
        versions['cupy'] = device.xp.__version__
    return versions


def write_config(args, device, processes=1, record=None, resumed_from=None,
                 iteration=0):
    """Writes ``config.json`` into ``args.out``: a new record, or, with
    ``record`` (the run resumed), that record plus one entry for this
    invocation."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    if record is None:
        config = dict(vars(args), processes=processes, started=now)
        config['device'] = str(device)
        config['versions'] = _versions(device)
        config['resumed'] = []
    else:
        config = dict(record)
        # 'device' is recorded as the device used, not as specified
        now = dict(vars(args), device=str(device))
        # an option the record is older than counts as its default
        parser = train_options.build_parser()
        changed = {
            name: [record.get(name), value]
            for name, value in sorted(now.items())
            if name in BOOKKEEPING and record.get(
                name, parser.get_default(name)) != value}
        config['resumed'] = list(record.get('resumed', [])) + [{
            'at': now, 'snapshot': resumed_from, 'iteration': iteration,
            'changed': changed, 'device': str(device),
            'versions': _versions(device)}]
    text = json.dumps(config, indent=2, sort_keys=True) + '\n'
    atomic_files.write_atomically(os.path.join(args.out, CONFIG_NAME),
                                  lambda f: f.write(text.encode('utf-8')),
                                  run_output=True)
