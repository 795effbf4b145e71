"""Push the example jobs: `python -m app.examples` from the project root.

Then run them with `craft queue:work --stop-when-empty`. A problem the
operator can fix (no key, a missing table, bad config) is one line on stderr,
as `craft` prints it, and exit status 1.
"""

from __future__ import annotations

import os
import sys
import traceback

from craft.errors import explain
from providers import bootstrap
from queueing import Queue


def notify_slack(channel: str, text: str) -> None:
    """A plain function works as a job too; it runs once and has no failed() callback."""
    print(f"[{channel}] {text}", flush=True)


def main() -> int:
    """Push the examples; return the exit status, having said in one line what stopped it."""
    try:
        return push_examples()
    except Exception as error:
        if os.environ.get("CRAFT_DEBUG"):
            traceback.print_exc()
        print(f"app.examples: {explain(error)}", file=sys.stderr, flush=True)
        return 1


def push_examples() -> int:
    """Push a welcome email, a delayed one, a function, and an image resize that fails."""
    container = bootstrap()
    # Imported after bootstrap, which puts the project root on sys.path.
    from app.jobs.ResizeImage import ResizeImage
    from app.jobs.SendWelcomeEmail import SendWelcomeEmail

    queue = container.make(Queue)
    pushed = [
        *queue.push(SendWelcomeEmail, args=["ada@example.com"]),
        *queue.push(SendWelcomeEmail, args=["grace@example.com"], wait="2 seconds"),
        *queue.push(notify_slack, args=["#signups", "two new users"]),
        *queue.push(ResizeImage, args=["storage/uploads/missing.png"]),
    ]
    print(f"pushed {len(pushed)} jobs to the {queue.default} driver: {', '.join(pushed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
