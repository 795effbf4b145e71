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
        # Due jobs a worker reserves at once. More means fewer round trips per
        # job; the ones not started yet are given back when the job in hand
        # runs long (its lease needs extending) or the worker stops. Use 1 for
        # strict queue priority with long jobs.
        "prefetch": env("QUEUE_DATABASE_PREFETCH", 10),
    },
    "amqp": {
        # RabbitMQ. Credentials go to the broker as they are, so any character
        # is fine here; port None means 5672 and vhost None means "/".
        "username": env("QUEUE_AMQP_USERNAME", "guest", cast=False),
        "password": env("QUEUE_AMQP_PASSWORD", "guest", cast=False),
        "host": env("QUEUE_AMQP_HOST", "127.0.0.1", cast=False),
        "port": env("QUEUE_AMQP_PORT", 5672),
        "vhost": env("QUEUE_AMQP_VHOST", None, cast=False),
        # The queue a push goes to when it names none.
        "channel": env("QUEUE_AMQP_CHANNEL", "default", cast=False),
        # Or one URL instead of the parts above, special characters
        # percent-encoded: amqp://user:p%40ss@host:5672/%2F
        "url": env("QUEUE_AMQP_URL", None, cast=False),
        # Tries to open a connection, and tries to publish a message (a new
        # connection each) before a push raises.
        "connection_attempts": env("QUEUE_AMQP_CONNECTION_ATTEMPTS", 3),
        "publish_attempts": env("QUEUE_AMQP_PUBLISH_ATTEMPTS", 3),
        # Seconds between heartbeats (None: the broker's choice). Workers keep
        # them flowing while a job runs, however long it takes.
        "heartbeat": env("QUEUE_AMQP_HEARTBEAT", 60),
        # Messages a worker holds unacknowledged per queue it takes from: the
        # one running, plus the ones already on their way to it (so it never
        # waits for the broker between short jobs). The unstarted ones are
        # given back when the worker stops and when the job in hand runs
        # over a second, so a long job holds back no other.
        "prefetch": env("QUEUE_AMQP_PREFETCH", 100),
        # Seconds a push waits while the broker blocks publishers (low on
        # memory or disk) before it gives up.
        "blocked_connection_timeout": 60,
    },
}

# The connection whose failed_jobs table keeps failed jobs of every driver
# (None: the default connection of config/database.py).
FAILED_CONNECTION = env("QUEUE_FAILED_CONNECTION", None)
