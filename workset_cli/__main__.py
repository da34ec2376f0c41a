"""`workset` (or `python -m workset_cli`): list, inspect, submit and act on worksets through the workset monitor's API.

Every request is signed with SigV4 from the standard AWS credentials. Tables are for people; `--output json` prints
the API's JSON for scripts. Failures print one line on stderr and exit 1 (2 for usage and configuration errors,
130 when interrupted).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import requests
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from agent.client import ApiError

from .commands import (
    ACTIONS,
    CommandFailed,
    Console,
    Context,
    act_on_workset,
    list_worksets,
    open_dashboard,
    show_clusters,
    show_history,
    show_stats,
    show_workset,
    submit_folder,
    watch,
)
from .config import DEFAULT_PREFIX, ConfigError, Settings, resolve
from .views import PRIORITY_ORDER, STATE_ORDER

PROG = "workset"
ACTION_HELP = {
    "cancel": "stop a workset; a running agent stops its run at its next heartbeat",
    "retry": "start a new attempt of a workset in error, canceled or ignored",
    "archive": "archive a workset that ended",
    "restore": "bring an archived workset back to the queue, as a new attempt",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line. The global options are accepted before or after the command: `workset list -o json`."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, parents=[_global_options(suppress=False)])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[_global_options()])

    listing = command("list", "list worksets, one state in queue order or all of them")
    listing.add_argument("--state", choices=STATE_ORDER)
    listing.add_argument("--priority", choices=PRIORITY_ORDER)
    listing.add_argument(
        "--cluster",
        help="only the worksets this cluster holds now: assigned to it while ready, locked or in_progress on it "
        "(with --state, one of those three)",
    )
    _paging(listing, "worksets")
    listing.set_defaults(run=list_worksets)

    show = command("show", "show a workset: its fields, then its newest 100 history entries as a timeline")
    show.add_argument("workset_id", metavar="ID")
    show.set_defaults(run=show_workset)

    history = command("history", "show a workset's history, oldest first")
    history.add_argument("workset_id", metavar="ID")
    _paging(history, "entries")
    history.set_defaults(run=show_history)

    submit = command("submit", "check a workset folder, upload it to S3, then its daylily.ready sentinel last")
    submit.add_argument("folder", type=Path, metavar="FOLDER")
    submit.add_argument("--id", help="the workset's id (default: the folder's name)")
    submit.add_argument("--bucket", help="the workset bucket (WORKSET_BUCKET)")
    submit.add_argument(
        "--prefix", help=f"the key prefix of workset folders (WORKSET_PREFIX, default {DEFAULT_PREFIX})"
    )
    submit.add_argument("--wait", action="store_true", help="then wait until the workset is registered and show it")
    submit.add_argument("--timeout", type=_positive(float), default=120.0, help="how long --wait waits, in seconds")
    submit.set_defaults(run=submit_folder)

    for action in ACTIONS:
        acting = command(action, ACTION_HELP[action])
        acting.add_argument("workset_id", metavar="ID")
        acting.add_argument("--reason", default="", help="why, for the workset's history")
        acting.add_argument("--actor", help="who asks, for the history (default: user@host)")
        acting.set_defaults(run=act_on_workset, action=action)

    stats = command("stats", "worksets per state, ready worksets per priority, and the scheduler's stats")
    stats.set_defaults(run=show_stats)

    clusters = command("clusters", "list the registered clusters, or show one")
    clusters.add_argument("name", nargs="?", metavar="NAME")
    clusters.set_defaults(run=show_clusters)

    dashboard = command(
        "dashboard",
        "print the web dashboard's address, signed in for an hour by temporary credentials in its fragment",
    )
    dashboard.add_argument("--open", action="store_true", help="and open it in a web browser")
    dashboard.add_argument(
        "--duration",
        type=_whole_seconds(900, 129_600),
        default=3600,
        help="how long the temporary credentials made from long-term keys last, in seconds (900 to 129600)",
    )
    dashboard.add_argument(
        "--without-credentials", action="store_true", help="the bare address: sign in on the page by hand"
    )
    dashboard.set_defaults(run=open_dashboard)

    watching = command(
        "watch",
        "follow a workset's changes until it ends (exit 0 when complete, 1 otherwise), or without ID the queue "
        "until Ctrl-C",
    )
    watching.add_argument("workset_id", nargs="?", metavar="ID")
    watching.add_argument("--interval", type=_positive(float), default=5.0, help="seconds between polls (default 5)")
    watching.set_defaults(run=watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(sys.stdout, sys.stderr, json=args.output == "json")

    try:
        settings = resolve(
            api_url=args.api_url,
            region=args.region,
            bucket=getattr(args, "bucket", None),
            prefix=getattr(args, "prefix", None),
            environ=os.environ,
            cwd=Path.cwd(),
        )
    except ConfigError as exc:
        return _fail(str(exc), exit_code=2)

    try:
        return int(args.run(args, Context(settings, console)))
    except CommandFailed as exc:
        return _fail(str(exc), exit_code=exc.exit_code)
    except ApiError as exc:
        return _fail(_refusal(exc, settings))
    except requests.RequestException as exc:
        return _fail(f"cannot reach the API at {settings.api_url}: {_cause(exc)}")
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        return _fail(f"AWS: {_one_line(str(exc))}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`workset list | head`): say nothing, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _global_options(suppress: bool = True) -> argparse.ArgumentParser:
    """The options every command takes. A command's copy sets nothing unless given (SUPPRESS), so an option given
    before the command is not reset by the command's default."""
    options = argparse.ArgumentParser(add_help=False)
    unset = argparse.SUPPRESS
    options.add_argument(
        "--api-url",
        default=unset if suppress else None,
        help="the API's base URL (WORKSET_API_URL; default: .local/stack.json's, when `make local` wrote one here)",
    )
    options.add_argument(
        "--region",
        default=unset if suppress else None,
        help="AWS region to sign for (default: the execute-api URL's, else AWS_REGION or the AWS profile's)",
    )
    options.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=unset if suppress else "table",
        help="table for people (default), json for scripts: the API's JSON",
    )
    return options


def _paging(parser: argparse.ArgumentParser, items: str) -> None:
    parser.add_argument("--limit", type=_positive(int), help=f"{items} per page (the API's default: 50; at most 500)")
    parser.add_argument("--all", action="store_true", help="follow every page")


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def _whole_seconds(least: int, most: int) -> Callable[[str], int]:
    """An argparse type: a whole number of seconds from `least` to `most`."""

    def parse(text: str) -> int:
        if not text.isdigit() or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"a whole number of seconds from {least} to {most}, not {text!r}")
        return int(text)

    return parse


def _refusal(exc: ApiError, settings: Settings) -> str:
    message = str(exc)
    if exc.status == 403 and settings.session.get_credentials() is None:
        message += " (no AWS credentials were found to sign the request: configure them as for the AWS CLI)"
    return _one_line(message)


def _cause(exc: requests.RequestException) -> str:
    """The root cause of a requests error in a few words, e.g. `Connection refused`, not urllib3's wrapping."""
    cause = exc.args[0] if exc.args else exc
    text = str(getattr(cause, "reason", cause))
    text = re.sub(r"^(<[^>]*>|\w+\(host=[^)]*\)):\s*", "", text)
    return f"{type(exc).__name__}: {_one_line(text)}" if text else type(exc).__name__


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


def _fail(message: str, exit_code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
