"""One-line errors and the exit statuses of this project's commands.

A user never sees a traceback for a problem they can fix: the command writes
one line, ``PROGRAM: error: what is wrong and how to fix it``, and exits with
a status from the table below. Entry points set :data:`program` to their
own name.
"""
import sys

# Exit statuses: 0 done; 1 the environment, data, output directory or
# snapshot is unusable; 2 bad arguments (argparse); 3 training diverged;
# 128 + signal number when stopped by a signal (130 SIGINT, 143 SIGTERM).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_STATUS_HELP = '''exit status:
  0    finished
  1    unusable environment, data, output directory or --resume snapshot
  2    bad argument
  3    training diverged (NaN or infinite loss or parameter); the last
       good snapshot is left as it was
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM, after writing a snapshot
       (at once, without one, on a second Ctrl-C)'''

program = 'train_mnist.py'


def stop(message, status):
    """Ends the program with one line on stderr instead of a traceback."""
    sys.stdout.flush()
    sys.stderr.write('{}: {}\n'.format(program, message))
    raise SystemExit(status)


def fail(message, status=EXIT_ERROR):
    """Ends the program with ``PROGRAM: error: message``."""
    stop('error: {}'.format(message), status)


def tell(message):
    """Writes ``PROGRAM: message`` on stderr and goes on."""
    sys.stdout.flush()
    sys.stderr.write('{}: {}\n'.format(program, message))


def warn(message):
    """Writes ``PROGRAM: warning: message`` and goes on."""
    tell('warning: {}'.format(message))
