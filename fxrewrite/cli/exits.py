"""The command's exit codes, in one table (docs/cli.md says what each means)."""

EXIT_OK = 0
#: the model has nodes the target cannot run, a training diverged, a toolchain refused the graph
EXIT_ILLEGAL = 1
#: bad input: one line on stderr (fxrewrite.errors)
EXIT_BAD_INPUT = 2
#: a bug in fxrewrite
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader quit
EXIT_TERMINATED = 143  # 128 + SIGTERM
