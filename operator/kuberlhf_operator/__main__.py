"""`python -m kuberlhf_operator`: run the operator.

Equivalent kopf command line (this entry point only adds defaults):

    kopf run -m kuberlhf_operator.handlers --all-namespaces --standalone \\
        --liveness=http://0.0.0.0:8080/healthz

Settings beyond these flags come from KUBERLHF_OPERATOR_* variables (see settings.py).
"""

from __future__ import annotations

import argparse

import kopf

from . import handlers  # noqa: F401  (registers the handlers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kuberlhf_operator", description="The kuberlhf RLHFJob operator.")
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable; globs allowed); default: all namespaces")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint URL; empty disables it (default: %(default)s)")
    parser.add_argument("--log-format", choices=[f.name.lower() for f in kopf.LogFormat], default="full",
                        help="log line format (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log kopf's own debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    # One replica (Deployment strategy Recreate): standalone skips kopf's peering objects.
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
        standalone=True,
    )


if __name__ == "__main__":
    main()
