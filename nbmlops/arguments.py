"""One argument definition per verb, shared by the magics and the CLI.

Each function fills a parser it is given, so the CLI adds it as a subcommand and the magics
use a parser whose ``error()`` raises IPython's ``UsageError``.
"""

from __future__ import annotations

import argparse

from nbmlops.errors import UsageError


def package_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``%%mlops_package NAME --model VAR --data VAR ...``"""
    parser.description = (
        "Run the cell, then package --model with its --preprocess functions, profile --data, "
        "evaluate on --eval, check parity in a fresh process and register a new version."
    )
    parser.add_argument("name", help="registered model name, e.g. churn")
    parser.add_argument("--model", required=True, metavar="VAR", help="fitted estimator")
    parser.add_argument(
        "--data", required=True, metavar="VAR", help="raw training inputs (a DataFrame)"
    )
    parser.add_argument("--target", metavar="VAR", help="training labels, for lineage")
    parser.add_argument(
        "--preprocess",
        nargs="+",
        default=[],
        metavar="FUNC",
        help="functions applied in order to the raw frame before the model",
    )
    parser.add_argument(
        "--eval", nargs=2, metavar=("XVAR", "YVAR"), help="held-out inputs and labels"
    )
    parser.add_argument("--metric", help="primary metric (default f1_macro or rmse)")
    parser.add_argument("--alias", help="alias to point at the new version, e.g. staging")
    parser.add_argument(
        "--tag", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="version tags"
    )
    parser.add_argument("--description", help="a sentence about this version")
    parser.add_argument("--notebook", help="notebook path, when the front end does not expose it")
    return parser


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """``["team=growth", "ticket=42"]`` as a dict; a pair without ``=`` is a usage error."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {pair!r} is not KEY=VALUE, e.g. --tag team=growth")
        tags[key] = value
    return tags
