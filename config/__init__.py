"""The project's configuration files, read by `providers.Configuration`."""
