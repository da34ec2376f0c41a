"""`python -m agent` / `workset-agent`: run the cluster agent.

Configuration comes from flags, or from the environment variables named in each flag's help.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .client import ApiClient, ApiError
from .runner import Agent, AgentConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workset-agent", description=__doc__)
    env = os.environ.get
    parser.add_argument("--api", default=env("WORKSET_API_URL"), help="API base URL (WORKSET_API_URL)")
    parser.add_argument("--cluster", default=env("WORKSET_CLUSTER"), help="this cluster's name (WORKSET_CLUSTER)")
    parser.add_argument(
        "--run-prefix",
        default=env("WORKSET_RUN_PREFIX", "dy-r"),
        help="command the workset's dy-r arguments are appended to (WORKSET_RUN_PREFIX, default dy-r)",
    )
    parser.add_argument("--region", default=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1")
    parser.add_argument("--max-worksets", type=int, default=int(env("WORKSET_MAX_WORKSETS", "1")))
    parser.add_argument("--vcpus", type=int, default=int(env("WORKSET_VCPUS", "0")))
    parser.add_argument("--cost-per-vcpu-hour", type=float, default=float(env("WORKSET_COST_PER_VCPU_HOUR", "0")))
    parser.add_argument("--heartbeat-seconds", type=float, default=float(env("WORKSET_HEARTBEAT_SECONDS", "60")))
    parser.add_argument("--poll-seconds", type=float, default=float(env("WORKSET_POLL_SECONDS", "10")))
    parser.add_argument("--work-root", type=Path, default=Path(env("WORKSET_WORK_ROOT", "/tmp/workset-agent")))
    parser.add_argument(
        "--exit-when-idle", type=float, metavar="SECONDS", help="exit after this long without work (default: run on)"
    )
    args = parser.parse_args(argv)

    if not args.api or not args.cluster:
        parser.error("--api and --cluster are required (or WORKSET_API_URL and WORKSET_CLUSTER)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)

    config = AgentConfig(
        cluster=args.cluster,
        run_prefix=args.run_prefix,
        region=args.region,
        max_worksets=args.max_worksets,
        vcpus=args.vcpus,
        cost_per_vcpu_hour=args.cost_per_vcpu_hour,
        heartbeat_seconds=args.heartbeat_seconds,
        poll_seconds=args.poll_seconds,
        work_root=args.work_root,
    )
    agent = Agent(ApiClient(args.api, region=args.region), config)
    try:
        outcomes = agent.run_forever(idle_exit_seconds=args.exit_when_idle)
    except ApiError as exc:
        print(f"workset-agent: the API refused: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if all(outcome.state == "complete" for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
