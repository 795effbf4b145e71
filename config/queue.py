"""The queue: the default driver and each driver's settings."""

from providers.environment import env

# The driver `Queue.push` uses; `queue.driver("name")` picks another per push.
DRIVER = env("QUEUE_DRIVER", "database")

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
    "database": {
        # The connection (from config/database.py) holding queue_jobs.
        "channel": env("QUEUE_DATABASE_CONNECTION", "sqlite"),
        # The queue a push goes to when it names none.
        "queue": "default",
        # Seconds a reserved job stays leased before another worker may take
        # it; a running worker keeps extending the lease of its job.
        "retry_after": 90,
    },
}

# The connection whose failed_jobs table keeps failed jobs of every driver
# (None: the default connection of config/database.py).
FAILED_CONNECTION = env("QUEUE_FAILED_CONNECTION", None)
