"""`python -m local.drop FOLDER [--name NAME]`: drop a workset folder into the running local stack's bucket.

It uploads the folder's files, then the `daylily.ready` sentinel, as a person would, using the endpoints that
`make local` wrote to `.local/stack.json`; then it prints where the workset can be read through the API.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import quote

from local.demo import Stack, upload_workset
from local.stack import STATE_FILE


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
    count = upload_workset(stack.client("s3"), stack.bucket, stack.prefix, args.folder, name)
    print(f"uploaded {count} files and daylily.ready to s3://{stack.bucket}/{stack.prefix}{name}/")
    keys = stack.description["credentials"]
    user = f"{keys['aws_access_key_id']}:{keys['aws_secret_access_key']}"
    sign = f"--aws-sigv4 aws:amz:{stack.region}:execute-api --user {user}"
    print(f"read it with: curl -s {sign} {stack.api_url}/worksets/{quote(name, safe='')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
