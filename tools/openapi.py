"""Write the API's OpenAPI document, generated from the code of both API functions, to `openapi.json`.

    make openapi        # or: PYTHONPATH=.:layers/common python -m tools.openapi [--check]

The API serves the same document at `GET /openapi.json` (and a docs page at `GET /docs`); the committed copy is for
readers and for generating clients. With `--check`, nothing is written and the exit status is 1 when the committed
copy differs from the code (a test does the same).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_CODE = ROOT / "functions" / "api"
DOCUMENT = ROOT / "openapi.json"


def generate() -> str:
    """The document, as the read function builds it: the routes of `read.py` and `write.py`, merged."""
    # NOTE: the document does not depend on the deployment, but the function reads its settings on import.
    os.environ.setdefault("WORKSET_TABLE", "openapi")
    os.environ.setdefault("WORKSET_BUCKET", "openapi")
    sys.path.insert(0, str(API_CODE))
    spec = importlib.util.spec_from_file_location("read", API_CODE / "read.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["read"] = module
    spec.loader.exec_module(module)
    return str(module.app.get_openapi_merge_json_schema()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if openapi.json differs from the code")
    options = parser.parse_args(argv)

    document = generate()
    if options.check:
        current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
        if current != document:
            print("openapi.json differs from the code; run `make openapi`", file=sys.stderr)
            return 1
        return 0

    DOCUMENT.write_text(document, encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
