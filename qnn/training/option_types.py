"""Types for ``argparse`` options that reject bad values with the reason.

Each raises ``argparse.ArgumentTypeError``, so that argparse exits with
status 2 and one line naming the option and what is wrong with its value.
"""
import argparse
import math
import os


def integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            '{!r} is not an integer'.format(text))


def positive_int(text):
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(
            'must be a positive integer, got {}'.format(value))
    return value


def non_negative_int(text):
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(
            'must be 0 or more, got {}'.format(value))
    return value


def seed(text):
    value = integer(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(
            'must be between 0 and 2**32 - 1, got {}'.format(value))
    return value


def frequency(text):
    """A number of epochs, or -1 for "only at the end"."""
    return -1 if integer(text) == -1 else positive_int(text)


def snapshot_path(text):
    """An existing file, or ``'auto'``."""
    if text != 'auto' and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            'no such file: {}'.format(text) if not os.path.exists(text)
            else 'not a file: {}'.format(text))
    return text


def number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a number'.format(text))


def positive_float(text):
    value = number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            'must be a positive number, got {}'.format(text))
    return value


def fraction(text):
    """A probability in [0, 1)."""
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            'must be at least 0 and below 1, got {}'.format(text))
    return value


def bits(text, low=1):
    import qst  # here: the other types serve inference.py without Chainer
    value = integer(text)
    if not low <= value <= qst.FULL_PRECISION:
        raise argparse.ArgumentTypeError(
            'must be between {} and {} bits ({} means full precision), got '
            '{}'.format(low, qst.FULL_PRECISION, qst.FULL_PRECISION, value))
    return value


def gradient_bits(text):
    # a sign bit and at least one magnitude bit
    return bits(text, low=2)


def randomizer_bits(text):
    return bits(text, low=1)


def lr_steps(text):
    """A ``--lr-steps`` value, checked
    (:func:`qnn.training.extensions.step_size_schedule.parse_lr_steps`)
    and kept as the text."""
    # here: the other types serve inference.py without Chainer
    from qnn.training.extensions import step_size_schedule
    try:
        step_size_schedule.parse_lr_steps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the epilog's table as written."""

    def _get_help_string(self, action):
        if action.nargs == 0:  # a flag: "(default: True)" would mislead
            return action.help
        return super(HelpFormatter, self)._get_help_string(action)
