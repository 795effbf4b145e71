"""The application: its name, its key and its service providers."""

from app.providers.AppProvider import AppProvider
from providers import DatabaseProvider, QueueProvider
from providers.environment import env, env_list

NAME = env("APP_NAME", "queue-app")

# Signs every queued payload (HMAC-SHA256). Make one with `craft key --store`,
# which writes APP_KEY to .env. Without a key, pushing and working refuse.
KEY = env("APP_KEY", None, cast=False)

# Keys used before `craft key --rotate`, newest first, from APP_PREVIOUS_KEYS
# (comma-separated). They verify jobs queued before a rotation; nothing new is
# signed with them. Remove one once no job or failed job signed with it is left.
PREVIOUS_KEYS = env_list("APP_PREVIOUS_KEYS")

DEBUG = env("APP_DEBUG", False)

PROVIDERS = [AppProvider, DatabaseProvider, QueueProvider]
