"""`python -m local.drop FOLDER [--name NAME]`: drop a workset folder into the running local stack's bucket.

It uploads the folder's files, then the `daylily.ready` sentinel, as a person would, using the endpoints that
`make local` wrote to `.local/stack.json`; then it prints how to read the workset through the API: with the
`workset` command, and with curl when the id needs no percent-encoding.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from urllib.parse import quote

from local.demo import Stack, upload_workset
from local.stack import STATE_FILE
from workset_monitor.layout import workset_name_problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.drop", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a workset folder, e.g. examples/worksets/hg003-wes-normal")
    parser.add_argument("--name", help="the workset's name in the bucket (default: the folder's name)")
    parser.add_argument("--state-file", type=Path, default=STATE_FILE, help="the running stack's description")
    args = parser.parse_args(argv)

    if not args.state_file.exists():
        parser.error(f"{args.state_file} does not exist: start the local stack first with `make local`")
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")

    stack = Stack(json.loads(args.state_file.read_text()))
    name = args.name or args.folder.resolve().name
    problem = "a workset name is one folder: it cannot hold /" if "/" in name else workset_name_problem(name)
    if problem is not None:
        parser.error(f"{name!r} cannot be a workset's name: {problem}")
    count = upload_workset(stack.client("s3"), stack.bucket, stack.prefix, args.folder, name)
    print(f"uploaded {count} files and daylily.ready to s3://{stack.bucket}/{stack.prefix}{name}/")
    print(f"read it with: {_workset_show(stack, name, args.state_file)}")
    if _curl_can_reach(name):
        keys = stack.description["credentials"]
        user = f"{keys['aws_access_key_id']}:{keys['aws_secret_access_key']}"
        sign = f"--aws-sigv4 aws:amz:{stack.region}:execute-api --user {user}"
        print(f"or with: curl -s {sign} {stack.api_url}/worksets/{name}")
    return 0


def _workset_show(stack: Stack, workset_id: str, state_file: Path) -> str:
    """The `workset show` command that reads the workset, to run in the checkout: as is when the state file is the
    `.local/stack.json` the command finds by itself; else with the stack's API URL, region and local credentials in
    its environment."""
    command = f".venv/bin/workset show {shlex.quote(workset_id)}"
    if state_file.resolve() == (Path.cwd() / ".local" / "stack.json").resolve():
        return command
    keys = stack.description["credentials"]
    environment = {
        "WORKSET_API_URL": stack.api_url,
        "AWS_REGION": stack.region,
        "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
    }
    return " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items()) + f" {command}"


def _curl_can_reach(workset_id: str) -> bool:
    """Whether `curl --aws-sigv4` can read the workset: only when its id needs no percent-encoding in the path, since
    curl signs an encoded path as it is, where SigV4 (and so API Gateway) encodes it once more; and not `next`, which
    is a route of its own."""
    return quote(workset_id, safe="") == workset_id and workset_id != "next"


if __name__ == "__main__":
    sys.exit(main())
