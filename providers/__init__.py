"""Service providers and the bootstrap that runs them."""

from providers.bootstrap import bootstrap, find_project_root, project_root
from providers.configuration import Configuration, ConfigurationError
from providers.database_provider import DatabaseProvider
from providers.environment import env
from providers.provider import ServiceProvider
from providers.queue_provider import QueueProvider

__all__ = [
    "Configuration",
    "ConfigurationError",
    "DatabaseProvider",
    "QueueProvider",
    "ServiceProvider",
    "bootstrap",
    "env",
    "find_project_root",
    "project_root",
]
