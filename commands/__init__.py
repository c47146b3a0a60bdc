"""The `sefe` commands, one module per command group; `sefe.cli` mounts them and reports their errors.

Each module parses options into the library's models, calls one library function and prints the result.
Commands catch no errors: `sefe.errors.report_errors`, installed once by the CLI, turns user errors into one
line and their exit code, and Ctrl-C into the resume hint and exit code 130.
"""
