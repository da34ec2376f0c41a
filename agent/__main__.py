"""`python -m agent` / `workset-agent`: run the cluster agent.

Configuration comes from flags, or from the environment variables named in each flag's help. Exit status: 0 when
stopped between runs (or idle, with every run complete); 1 when the API refused or stayed unreachable, or a run
failed (with --exit-when-idle); 2 for a usage error; 3 when an operator retired the cluster (do not start it again:
a start registers the cluster again); 128 + the signal when stopped during runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import requests

from .client import ApiClient, ApiError, signing_region
from .folder import S3WorksetFolders
from .runner import Agent, AgentConfig, AgentStopped, ApiUnreachable, ClusterRetired

logger = logging.getLogger("workset_agent")


def build_parser() -> argparse.ArgumentParser:
    """The command line. Defaults from the environment stay strings, converted by argparse as typed values are, so a
    bad value (WORKSET_VCPUS=abc) is a clean usage error rather than a crash, and `--help` always works."""
    parser = argparse.ArgumentParser(prog="workset-agent", description=__doc__)
    env = os.environ.get
    parser.add_argument("--api", default=env("WORKSET_API_URL"), help="API base URL (WORKSET_API_URL); required")
    parser.add_argument(
        "--cluster", default=env("WORKSET_CLUSTER"), help="this cluster's name (WORKSET_CLUSTER); required"
    )
    parser.add_argument(
        "--run-prefix",
        default=env("WORKSET_RUN_PREFIX", "dy-r"),
        help="command the workset's dy-r arguments are appended to (WORKSET_RUN_PREFIX, default dy-r); a relative "
        "path as its first word is taken from the agent's working directory",
    )
    parser.add_argument(
        "--region",
        help="AWS region requests to the API are signed for (default: the execute-api URL's, else AWS_REGION or "
        "the AWS profile's, else us-east-1)",
    )
    parser.add_argument(
        "--cluster-region",
        default=env("WORKSET_CLUSTER_REGION"),
        help="the cluster's region, as registered and matched against work files' `region` "
        "(WORKSET_CLUSTER_REGION, default: the signing region)",
    )
    parser.add_argument(
        "--availability-zone",
        default=env("WORKSET_AVAILABILITY_ZONE"),
        help="the cluster's availability zone, as registered and matched against work files' `availability_zone` "
        "(WORKSET_AVAILABILITY_ZONE, default: none)",
    )
    parser.add_argument(
        "--max-worksets",
        type=int,
        default=env("WORKSET_MAX_WORKSETS", "1"),
        help="the cluster's capacity: how many worksets the scheduler assigns it and the agent runs at once "
        "(WORKSET_MAX_WORKSETS, default 1)",
    )
    parser.add_argument(
        "--vcpus",
        type=int,
        default=env("WORKSET_VCPUS"),
        help="the cluster's vCPUs (WORKSET_VCPUS); required: 0 counts no vCPUs, so a workset of any size fits",
    )
    parser.add_argument(
        "--cost-per-vcpu-hour",
        type=float,
        default=env("WORKSET_COST_PER_VCPU_HOUR"),
        help="the cluster's cost per vCPU-hour, in USD (WORKSET_COST_PER_VCPU_HOUR); required: 0 makes the cluster "
        "free, the scheduler's first choice within every budget",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=env("WORKSET_HEARTBEAT_SECONDS", "60"),
        help="how often to heartbeat the running worksets' leases and the cluster "
        "(WORKSET_HEARTBEAT_SECONDS, default 60)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=env("WORKSET_POLL_SECONDS", "10"),
        help="how often to ask for work while idle (WORKSET_POLL_SECONDS, default 10)",
    )
    parser.add_argument(
        "--stop-grace-seconds",
        type=float,
        default=env("WORKSET_STOP_GRACE_SECONDS", "10"),
        help="how long a run's process group has after TERM (a cancel, a lost lease, the agent stopping) before "
        "KILL (WORKSET_STOP_GRACE_SECONDS, default 10)",
    )
    parser.add_argument(
        "--work-root",
        type=Path,
        default=env("WORKSET_WORK_ROOT", "/tmp/workset-agent"),
        help="where each claim gets its own, empty, work directory (<workset>/attempt-<n>/<workdir_name>), and where "
        "the agent keeps the runs it holds (<cluster>.runs.json), to resume them after a restart (WORKSET_WORK_ROOT, "
        "default /tmp/workset-agent)",
    )
    parser.add_argument(
        "--no-s3",
        action="store_true",
        default=env("WORKSET_NO_S3", "") not in ("", "0", "false", "no"),
        help="do not copy the workset folder into the work directory nor write the log tail back to it, for a run "
        "prefix that reads the folder itself (WORKSET_NO_S3=1); S3 is reached with the standard AWS credentials, "
        "and AWS_ENDPOINT_URL_S3 points at an emulator",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        default=env("WORKSET_EXIT_WHEN_IDLE"),
        help="exit after this long without work (WORKSET_EXIT_WHEN_IDLE; default: run on)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    if not args.api or not args.cluster:
        parser.error("--api and --cluster are required (or WORKSET_API_URL and WORKSET_CLUSTER)")
    if args.vcpus is None or args.cost_per_vcpu_hour is None:
        parser.error(
            "--vcpus and --cost-per-vcpu-hour are required (or WORKSET_VCPUS and WORKSET_COST_PER_VCPU_HOUR): the "
            "scheduler sizes and prices the cluster by them; 0 is allowed, with a warning"
        )
    if args.max_worksets < 1:
        parser.error("--max-worksets must be 1 or more")
    if args.vcpus < 0 or args.cost_per_vcpu_hour < 0 or args.stop_grace_seconds < 0:
        parser.error("--vcpus, --cost-per-vcpu-hour and --stop-grace-seconds must not be negative")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)

    url = urlsplit(args.api)
    if url.scheme not in ("http", "https") or not url.netloc:
        _fail(
            f"--api must be an http(s) URL, such as https://<api-id>.execute-api.<region>.amazonaws.com/dev "
            f"(not {args.api!r})"
        )
        return 1

    session = boto3.Session()
    region = signing_region(args.api, args.region, environ=os.environ, session=session)
    config = AgentConfig(
        cluster=args.cluster,
        run_prefix=args.run_prefix,
        region=args.cluster_region or region,
        availability_zone=args.availability_zone or None,
        max_worksets=args.max_worksets,
        vcpus=args.vcpus,
        cost_per_vcpu_hour=args.cost_per_vcpu_hour,
        heartbeat_seconds=args.heartbeat_seconds,
        poll_seconds=args.poll_seconds,
        work_root=args.work_root,
        stop_grace_seconds=args.stop_grace_seconds,
    )
    warn_of_a_free_or_unsized_cluster(config)
    client = ApiClient(args.api, region=region, session=session)
    if client.session.get_credentials() is None:
        logger.warning(
            "no AWS credentials found: requests to the API go unsigned (a deployed API refuses them; "
            "only the local stack accepts them)"
        )
    folders = None if args.no_s3 else S3WorksetFolders(client.session.client("s3", region_name=region))
    agent = Agent(client, config, folders)
    try:
        outcomes = agent.run_forever(idle_exit_seconds=args.exit_when_idle)
    except AgentStopped as stop:
        return stop.exit_code
    except ClusterRetired as retired:
        _fail(
            f"cluster {retired.cluster} was retired; its runs are finished, so the agent stops (exit status "
            f"{retired.exit_code}). Starting the agent again registers the cluster again."
        )
        return retired.exit_code
    except ApiUnreachable:
        return 1  # logged where it happened, with what becomes of the workset
    except ApiError as exc:
        _fail(f"the API at {args.api} refused: {_one_line(str(exc))}")
        return 1
    except requests.RequestException as exc:
        _fail(f"cannot reach the API at {args.api}: {_reason(exc)}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if all(outcome.state == "complete" for outcome in outcomes) else 1


def warn_of_a_free_or_unsized_cluster(config: AgentConfig) -> None:
    """Say loudly what a cost or a vCPU count of 0 does to scheduling: such a cluster is a choice, not a default."""
    if config.cost_per_vcpu_hour == 0:
        logger.warning(
            "cluster %s costs 0 per vCPU-hour: the scheduler takes it for free, so it wins every placement against "
            "priced clusters and fits every budget (set --cost-per-vcpu-hour to its price)",
            config.cluster,
        )
    if config.vcpus == 0:
        logger.warning(
            "cluster %s declares 0 vCPUs: the scheduler counts none of its vCPUs, so a workset of any size fits it "
            "and only --max-worksets limits it (set --vcpus to its size)",
            config.cluster,
        )


def _fail(message: str) -> None:
    print(f"workset-agent: {message}", file=sys.stderr)


def _reason(exc: requests.RequestException) -> str:
    """The root cause of a requests error in a few words, e.g. `[Errno 111] Connection refused`, rather than the
    urllib3 retry-pool message around it."""
    cause = exc.args[0] if exc.args else exc
    text = str(getattr(cause, "reason", cause))
    # drop urllib3's "<HTTPConnection object at 0x..>: " or "HTTPConnection(host='h', port=1): " before the reason
    text = re.sub(r"^(<[^>]*>|\w+\(host=[^)]*\)):\s*", "", text)
    return f"{type(exc).__name__}: {_one_line(text)}" if text else type(exc).__name__


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


if __name__ == "__main__":
    sys.exit(main())
