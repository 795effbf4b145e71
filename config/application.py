"""The application: its name, its key and its service providers."""

from app.providers.AppProvider import AppProvider
from providers import DatabaseProvider, QueueProvider
from providers.environment import env

NAME = env("APP_NAME", "queue-app")

# Signs every queued payload (HMAC-SHA256). Make one with `craft key --store`,
# which writes APP_KEY to .env. Without a key, pushing and working refuse.
KEY = env("APP_KEY", None, cast=False)

DEBUG = env("APP_DEBUG", False)

PROVIDERS = [AppProvider, DatabaseProvider, QueueProvider]
