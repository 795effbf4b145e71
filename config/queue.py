"""The queue: the default driver and each driver's settings."""

from providers.environment import env

# The driver `Queue.push` uses; `queue.driver("name")` picks another per push.
DRIVER = env("QUEUE_DRIVER", "async")

DRIVERS = {
    "async": {
        # "threading" runs jobs in threads of this process; "multiprocess" in
        # child processes that build their own container from PROVIDERS.
        "mode": env("QUEUE_ASYNC_MODE", "threading"),
        "workers": env("QUEUE_ASYNC_WORKERS", 4),
        # True runs each job before push() returns and prints a line per job:
        # handy while developing, never in production.
        "blocking": env("APP_DEBUG", False),
        # Seconds a finished program waits for delayed jobs and retries.
        "exit_grace": 30,
    },
    "sync": {
        "raise_errors": False,
    },
}
