"""Exit codes of every `adaptive-sarathi` subcommand, one per class of outcome."""

OK = 0
FAILURE = 1  # the run itself failed: server unreachable, no request succeeded, a runtime error
USAGE = 2  # bad flags or input files (argparse uses 2 too); the message names the field and the fix
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after writing what was finished
